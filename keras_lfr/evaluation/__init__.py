"""Robust accuracy under named attack protocols, and gradient-masking sanity checks.

One module per job, every public name importable from here:

- `protocols`: the registry of attack protocols (`PROTOCOLS`, `protocol`);
- `running`: running them, in memory (`robust_accuracy`) or in resumable
  chunks (`resumable_robust_accuracy`, `cache_key`, `cache_path`), in
  float32 or mixed precision (`PRECISIONS`, `search_precision`, `search_plan`);
- `comparison`: paired comparisons of two models' verdicts (`paired_comparison`);
- `sanity`: signs of gradient masking (`sanity_checks`, `black_box_check`,
  `confidence`);
- `reports`: markdown tables and the checks' plain-text report.
"""

from keras_lfr.evaluation.comparison import flags_to_string, paired_comparison
from keras_lfr.evaluation.protocols import (
    BLACK_BOX_ATTACKS,
    DEFAULT_PROTOCOL,
    PROTOCOLS,
    QUERY_PROTOCOLS,
    RELEASE_PROTOCOL,
    Protocol,
    autoattack_protocol,
    paper_protocol,
    protocol,
    strong_protocol,
)
from keras_lfr.evaluation.reports import format_checks, markdown_table
from keras_lfr.evaluation.running import (
    PRECISIONS,
    cache_key,
    cache_path,
    correct_under,
    resumable_robust_accuracy,
    robust_accuracy,
    search_plan,
    search_precision,
)
from keras_lfr.evaluation.sanity import (
    BLACK_BOX_CHECK,
    Check,
    black_box_check,
    confidence,
    sanity_checks,
)

__all__ = [
    "BLACK_BOX_ATTACKS",
    "BLACK_BOX_CHECK",
    "DEFAULT_PROTOCOL",
    "PRECISIONS",
    "PROTOCOLS",
    "QUERY_PROTOCOLS",
    "RELEASE_PROTOCOL",
    "Check",
    "Protocol",
    "autoattack_protocol",
    "black_box_check",
    "cache_key",
    "cache_path",
    "confidence",
    "correct_under",
    "flags_to_string",
    "format_checks",
    "markdown_table",
    "paired_comparison",
    "paper_protocol",
    "protocol",
    "resumable_robust_accuracy",
    "robust_accuracy",
    "search_plan",
    "search_precision",
    "sanity_checks",
    "strong_protocol",
]
