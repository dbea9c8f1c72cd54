-- Order lines, units and item revenue per merchant, order day and product category (paid or shipped orders).
SELECT i.merchant_id,
       DATE(o.created_at) AS day,
       p.category,
       COUNT(*) AS order_lines,
       SUM(i.qty) AS units,
       SUM(i.qty * i.price_cents) AS revenue_cents
FROM order_items i
JOIN orders o ON o.id = i.order_id
JOIN products p ON p.id = i.product_id
WHERE o.status IN ('paid', 'shipped')
GROUP BY i.merchant_id, DATE(o.created_at), p.category
