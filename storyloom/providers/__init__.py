"""Text, image and speech models behind small protocols (base.py); offline.py is the default."""
