-- Trust around shared likenesses: a public card hidden after enough distinct reports (pending an
-- operator's review), and a character an operator took down (it stops working everywhere).
ALTER TABLE characters ADD COLUMN hidden_at REAL;
ALTER TABLE characters ADD COLUMN taken_down_at REAL;
