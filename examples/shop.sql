-- The bundled example database (examples/shop.db is built from this file with sqlite3).
PRAGMA journal_mode = WAL;
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE, created_at TEXT NOT NULL);
CREATE TABLE products (id INTEGER PRIMARY KEY, sku TEXT NOT NULL UNIQUE, title TEXT NOT NULL, price_cents INTEGER NOT NULL, photo BLOB);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id), placed_at TEXT NOT NULL, note TEXT);
CREATE TABLE order_items (order_id INTEGER NOT NULL REFERENCES orders(id), product_id INTEGER NOT NULL REFERENCES products(id), qty INTEGER NOT NULL, PRIMARY KEY (order_id, product_id));
CREATE INDEX orders_by_customer ON orders(customer_id);
CREATE VIEW order_totals AS
  SELECT o.id, o.customer_id, sum(i.qty * p.price_cents) AS total_cents
  FROM orders o JOIN order_items i ON i.order_id = o.id JOIN products p ON p.id = i.product_id GROUP BY o.id;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
INSERT INTO customers SELECT i, 'Customer ' || i, 'customer' || i || '@example.com', datetime('2026-01-01', '+' || i || ' hours') FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50)
INSERT INTO products SELECT i, 'SKU-' || printf('%04d', i), 'Product ' || i, 100 * i + 99, randomblob(64) FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
INSERT INTO orders SELECT i, 1 + (i % 200), datetime('2026-02-01', '+' || i || ' minutes'), CASE WHEN i % 7 = 0 THEN 'gift wrap' END FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
INSERT INTO order_items SELECT i, 1 + (i % 50), 1 + (i % 3) FROM n
UNION ALL SELECT i, 1 + ((i + 17) % 50), 1 FROM n;
PRAGMA journal_mode = DELETE;
