"""Gradient descent as the theorems analyse it: the one loop (`loop`: `train` and `descend`), many seeds at
once (`batched`), neurons split over processes (`distributed`), and the theorems' predictions checked on a
run (`diagnostics`)."""
