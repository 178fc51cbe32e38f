"""robaudit: measure how easily an image classifier is fooled by adversarial examples.

Attack results are an upper bound on true robust accuracy: a stronger attack can only find more
adversarial examples, never fewer.
"""

__version__ = "0.1.0"
