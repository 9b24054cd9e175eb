"""The networks of the seed documents (these modules import torch)."""
