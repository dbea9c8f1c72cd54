-- Orders and amounts per merchant, the merchant's current city and day (carts excluded); a city change moves the history.
SELECT o.merchant_id,
       m.city,
       DATE(o.created_at) AS day,
       COUNT(*) AS orders,
       SUM(o.amount_cents) AS amount_cents,
       MAX(o.amount_cents) AS largest_order_cents,
       COUNT(DISTINCT o.customer_id) AS customers
FROM orders o
JOIN merchants m ON m.id = o.merchant_id
WHERE o.status <> 'cart'
GROUP BY o.merchant_id, m.city, DATE(o.created_at)
