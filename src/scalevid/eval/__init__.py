"""Downstream evaluation with the backbone frozen, in pipeline order: the probe interface
(`probes`), splits and metrics (`splits`), kNN (`knn`), linear / MLP heads (`heads`), grid fitting
and selection on validation (`selection`), set probes on the SCALE predictor (`set_probes`),
representations, the baseline cache (`cache`), the protocol that selects on validation and scores
on test (`protocol`), and the report."""
