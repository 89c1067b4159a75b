"""The paper's experiments as functions that return numbers, and their figures: Table 1 and
Figure 6 (`table1`), Eight Schools (`eight_schools`), binarized MNIST (`mnist`), `plots`."""
