"""Portfolio monitoring (watched companies, rules, sweeps) and batch scoring."""
