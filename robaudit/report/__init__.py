"""Reporters: they read only the AuditResult and never import torch."""
