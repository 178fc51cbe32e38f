"""A fixed, hand-built results object for the reporter tests: every number is chosen here, not computed
by the code under test, so a reporter that misreads a field shows up as a wrong number on the page."""

from __future__ import annotations

import numpy as np

from robaudit.audit.gallery import magnified_perturbation, png_data_uri
from robaudit.results import (
    SCHEMA_VERSION,
    UPPER_BOUND_CAVEAT,
    AttackRow,
    AuditResult,
    ClassInfo,
    Confidence,
    DataInfo,
    Example,
    ModelInfo,
    Perturbation,
    Radius,
)


def _row(attack: str, eps: float, n_robust: int, fooled_by: int | None, seconds: float) -> AttackRow:
    n, n_cc = 200, 190
    return AttackRow(
        attack=attack,
        norm="linf",
        eps=eps,
        n_samples=n,
        n_clean_correct=n_cc,
        n_robust=n_robust,
        robust_accuracy=n_robust / n,
        robust_error=(n - n_robust) / n,
        attack_success_rate=(n_cc - n_robust) / n_cc,
        mean_confidence_adversarial_errors=0.81,
        robust_accuracy_ci=[max(0.0, n_robust / n - 0.06), min(1.0, n_robust / n + 0.06)],
        attack_success_rate_ci=[
            max(0.0, (n_cc - n_robust) / n_cc - 0.07),
            min(1.0, (n_cc - n_robust) / n_cc + 0.07),
        ],
        confidence=Confidence(overall=0.7, correct=0.66, errors=0.81),
        perturbation=Perturbation(
            n=n_cc - n_robust,
            linf_mean=eps,
            linf_median=eps,
            l2_mean=2.5,
            l2_median=2.4,
            l0_mean=480.0,
            l0_median=470.0,
        ),
        per_class_robust_accuracy=[0.9, 0.5, None],
        n_fooled_by_attack=fooled_by,
        n_target_hits=None,
        n_fooled_converted=190 - n_robust,
        seconds=seconds,
    )


def example_images() -> tuple[np.ndarray, np.ndarray]:
    """A 1x8x8 image with a bright square, and an adversarial copy with a checkerboard of +-0.1."""
    x = np.zeros((1, 8, 8), np.float32)
    x[0, 2:6, 2:6] = 0.8
    checker = (np.indices((8, 8)).sum(0) % 2 * 2 - 1).astype(np.float32)
    return x, np.clip(x + 0.1 * checker[None], 0, 1)


def fixed_result() -> AuditResult:
    x, x_adv = example_images()
    rows = [
        _row("fgsm", 0.1, 150, 40, 0.5),
        _row("pgd", 0.1, 120, 30, 4.0),
        _row("worst-case", 0.1, 120, None, 4.0),
        _row("fgsm", 0.2, 60, 130, 0.5),
        _row("pgd", 0.2, 20, 40, 3.0),
        _row("worst-case", 0.2, 18, None, 3.0),
    ]
    return AuditResult(
        schema_version=SCHEMA_VERSION,
        robaudit_version="0.1.0",
        created_utc="2026-01-02T03:04:05+00:00",
        model=ModelInfo(
            path="models/<script>alert(1)</script>.onnx",
            format="onnx",
            sha256="ab" * 32,
            backend="onnx",
            sample_shape=[1, 8, 8],
            num_classes=3,
            output_kind="logits",
            layout="nchw",
            gradients=True,
            converter="onnx2pytorch",
            parity_max_abs_diff=3e-6,
            runtime_provider="CPUExecutionProvider",
        ),
        data=DataInfo(
            source="data/holdout.npz",
            description="holdout.npz (200 images, 1x8x8)",
            sha256="cd" * 32,
            n_total=200,
            n_evaluated=200,
            subset="all",
        ),
        settings={
            "attacks": ["fgsm", "pgd"],
            "pgd": {"steps": 40, "rel_step_size": 2.5, "restarts": 1, "loss": "ce"},
            "onepixel": None,
            "attack_kwargs": {},
            "threat_models": ["linf eps=0.1", "linf eps=0.2"],
            "norms": ["linf"],
            "eps": [0.1, 0.2],
            "eps_scale": "[0, 1] (the data's pixel range mapped to [0, 1])",
            "target": "none",
            "input_range": [0.0, 1.0],
            "mean": None,
            "std": None,
            "seed": 7,
            "batch_size": 64,
            "device": "cpu",
        },
        environment={"python": "3.11.7", "robaudit": "0.1.0", "torch": "2.14.1", "device": "cpu"},
        clean_accuracy=0.95,
        n_clean_correct=190,
        mean_confidence_clean=0.9,
        rows=rows,
        clean_accuracy_ci=[0.91, 0.97],
        confidence_clean=Confidence(overall=0.9, correct=0.93, errors=0.42),
        classes=[
            ClassInfo(index=0, name="cat & dog", n=100, clean_accuracy=0.97),
            ClassInfo(index=1, name="<b>bold</b>", n=90, clean_accuracy=0.93),
            ClassInfo(index=2, name=None, n=0, clean_accuracy=None),
        ],
        radius=[
            Radius(
                norm="linf", eps=[0.1, 0.2], fooled_at=[70, 102], wrong_on_clean=10, not_fooled=18, median=0.2
            )
        ],
        gallery=[
            Example(
                sample_index=17,
                attack="pgd",
                norm="linf",
                eps=0.1,
                label=1,
                clean_pred=1,
                clean_conf=0.97,
                adv_pred=0,
                adv_conf=0.64,
                original_png=png_data_uri(x),
                perturbation_png=png_data_uri(magnified_perturbation(x, x_adv)),
                adversarial_png=png_data_uri(x_adv),
            )
        ],
        notes=["data/holdout.npz: x is memory-mapped"],
        timings={"load_seconds": 1.5, "clean_seconds": 0.2, "total_seconds": 12.0},
        caveat=UPPER_BOUND_CAVEAT,
    )
