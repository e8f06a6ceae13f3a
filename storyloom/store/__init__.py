"""The story database: stories, their generations and outputs, published atomically."""
