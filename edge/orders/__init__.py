"""Orders in the kitchen: their status machine, and applying events to them."""
