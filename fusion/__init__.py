"""fusion: chest X-rays and clinical records, classified together."""
__version__ = "0.1.0"
