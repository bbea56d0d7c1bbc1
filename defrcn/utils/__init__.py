"""Small helpers shared by tools and callbacks (drawing)."""
