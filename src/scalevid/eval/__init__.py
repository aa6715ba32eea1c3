"""Downstream evaluation with the backbone frozen: probes on stored features, set probes on the
SCALE predictor, the protocol that selects on validation and scores on test, and the report."""
