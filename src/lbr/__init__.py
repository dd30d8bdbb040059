"""lbr: Learn Before Represent."""
