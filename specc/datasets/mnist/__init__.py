"""MNIST, the four standard IDX files gzipped (CC BY-SA 3.0; see README.md)."""
