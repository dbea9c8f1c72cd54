-- Orders, GMV and refunds per merchant, day and hour of creation (carts excluded).
SELECT merchant_id,
       DATE(created_at) AS day,
       HOUR(created_at) AS hour,
       COUNT(*) AS orders,
       SUM(CASE WHEN status IN ('paid', 'shipped') THEN amount_cents ELSE 0 END) AS gmv_cents,
       SUM(CASE WHEN status = 'refunded' THEN 1 ELSE 0 END) AS refunded_orders,
       SUM(refund_cents) AS refund_cents
FROM orders
WHERE status <> 'cart'
GROUP BY merchant_id, DATE(created_at), HOUR(created_at)
