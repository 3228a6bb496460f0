"""Reports: evaluation results as markdown tables, sanity checks as plain text."""

import numbers


def format_checks(checks):
    """A plain-text report of sanity checks; failures are marked loudly."""
    lines = []
    for check in checks:
        mark = "PASS" if check.passed else "FAIL"
        lines.append(f"[{mark}] {check.name}: {check.detail}")
    if not all(check.passed for check in checks):
        lines.append(
            "WARNING: at least one sanity check FAILED: this is a likely sign of gradient "
            "masking. Do not trust robustness measured by gradient-based attacks alone; "
            "report the worst case over white-box and black-box attacks."
        )
    return "\n".join(lines)


def markdown_table(results_by_model):
    """Formats `{model name: robust_accuracy results}` as a markdown table (in %)."""
    columns = []
    for results in results_by_model.values():
        # The accuracies: not the count, the timers or the per-example verdicts.
        columns.extend(
            k
            for k, v in results.items()
            if isinstance(v, numbers.Real) and k not in ("examples", *columns)
        )
    lines = [
        "| model | " + " | ".join(columns) + " | examples |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for name, results in results_by_model.items():
        cells = [f"{100 * results[c]:.2f}" if c in results else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {results.get('examples', '')} |")
    return "\n".join(lines)
