"""Where generated files go: local.py (the default) or cloudinary.py, one folder layout."""
