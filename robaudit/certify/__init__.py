"""Certified lower bounds on robust accuracy: bound propagation over a chain of supported layers."""
