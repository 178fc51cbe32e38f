"""Transfer: adversarial examples made on one model, tried on others (``robaudit transfer``).

``result.py`` holds the document (torch-free, its own schema), ``examples.py`` makes each model's
examples through the audit's own preparation and attack step, ``matrix.py`` turns predictions into the
error-rate and confidence matrices, ``run.py`` orchestrates, and ``report.py``/``html.py`` render.
"""
