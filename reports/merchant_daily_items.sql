-- Order lines, units and item revenue per merchant and day the line was added (open carts included).
SELECT merchant_id,
       DATE(created_at) AS day,
       COUNT(*) AS order_lines,
       SUM(qty) AS units,
       SUM(qty * price_cents) AS revenue_cents,
       AVG(price_cents) AS avg_price_cents
FROM order_items
GROUP BY merchant_id, DATE(created_at)
