-- Orders, GMV, refunds and average order value per merchant and day (carts excluded).
SELECT merchant_id,
       DATE(created_at) AS day,
       COUNT(*) AS orders,
       SUM(CASE WHEN status IN ('paid', 'shipped') THEN amount_cents ELSE 0 END) AS gmv_cents,
       SUM(refund_cents) AS refund_cents,
       AVG(amount_cents) AS avg_order_cents
FROM orders
WHERE status <> 'cart'
GROUP BY merchant_id, DATE(created_at)
