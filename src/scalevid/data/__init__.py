"""Videos in: decoding (`decode`), clip sampling (`clips`), reading clips (`read`), video lists
(`lists`: types and the generic formats; `benchmark_lists`: UCF101, HMDB51, SSv2, Kinetics,
LVU; `list_formats`: any format, detected)."""
