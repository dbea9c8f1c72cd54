-- Paying customers (distinct over every merchant of the city), paid orders and GMV per merchant city and day.
SELECT m.city,
       DATE(o.created_at) AS day,
       COUNT(DISTINCT o.customer_id) AS paying_customers,
       COUNT(*) AS paid_orders,
       SUM(o.amount_cents) AS gmv_cents
FROM orders o
JOIN merchants m ON m.id = o.merchant_id
WHERE o.status IN ('paid', 'shipped')
GROUP BY m.city, DATE(o.created_at)
