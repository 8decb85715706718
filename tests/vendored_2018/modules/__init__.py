from .bn import ABN, InPlaceABN, InPlaceABNSync
from .functions import ACT_ELU, ACT_LEAKY_RELU, ACT_NONE, ACT_RELU

__all__ = ["ABN", "ACT_ELU", "ACT_LEAKY_RELU", "ACT_NONE", "ACT_RELU", "InPlaceABN", "InPlaceABNSync"]
