"""The code forms of each task's answer, as regular expressions: what `assignments build`
greps the whole student tree for (library, kernels, chapters, tests, top-level files; not
the handouts or the manifest, which state the equations on purpose) and refuses to write a
tree in which one of a chosen task's patterns still matches.

Each list holds the forms the solution tree has: the function itself, its fast-path twin,
its naive reference, its kernel, and the forms a test or a chapter wrote it in before they
asked tests/reference_values.py for such values (tests) or called the library (chapters).
`_rowdot` (the row-wise inner products) is given, so its einsum is no answer.  Every pattern matches at least one
line of the solution tree (tests/test_assignments.py checks it), so none is dead.

A student tree gets this module with ANSWERS empty: the patterns spell the answers too.
"""

ANSWERS = {
    "0.1": [r"^\s*for (i, )?\(?W, b\)? in "],
    "0.2": [r"x - \(?(l > 0|pos)\b", r"np\.log\(1 - p\)", r"np\.multiply\(logits, sign, out",
            r"x\[o \+ d\] \* ld - relu",
            r"\bx\w* \* [lLb]\w* - [\w.]*(softplus|logaddexp)"],            # x l - softplus(l)
    "0.3": [r"\(x - _?sigmoid\(l\)\)", r"subtract\(x, sig", r"np\.subtract\(sign, t, out", r"gi \* \(x\[o \+ d\] - sigmoid",
            r"\(x\w* - (1 / \(1 \+ \w+\.exp\(-l|_?sigmoid\w*\(l)"],        # g (x - sigmoid(l))
    "2.1": [r"loglik - kl_diag_normal_std",
            r"bernoulli\w*\(.*\) - kl_diag_normal_std\("],                      # log p(x|z) at z ~ q, - KL
    "3.1": [r"softplus\(-T_pos\)", r"softplus_sigmoid\(-T_pos\)",
            r"logaddexp\(0, -\w+\)\) \+ \w*\.?mean\(\w*\.?logaddexp\(0, "],        # the same, by logaddexp
    "3.2": [r"-T_q \+ loglik", r"mean\(loglik\)\) - T_q",
            r"-T \+ ll\)"],
    "4.1": [r"\(z - mean\) (/ onp\.sqrt|\* inv_sd)", r"0\.5 \* np\.sum\(z_bar \* z_bar", r"-T_pos \+ prior_pos",
            r"\(z\w* - (mean|mu)\) / (\w+\.sqrt\(var|sd\b)", r"0\.5 \* \w+\.sum\(z_?b\w* \*\* 2"],
    "5.1": [r"log\(nu / rho\)"],
    "5.2": [r"np\.dot\(F, G\.T\)", r"F @ G_neg\.T", r"\b[gw]\[:, None\] \* [FG]\b",
            r"\"bh,mh->bm\"", r"gi \* [FG]\[o \+ h\]",
            r"\bF\w* @ G\w*\.T\b", r"np\.sum\(F\w* \* G"],
    "5.3": [r"acc \+= f\[h\] \* g\[h\]"],
}
