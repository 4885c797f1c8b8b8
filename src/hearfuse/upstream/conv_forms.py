"""How an upstream's convolutions may be computed (:mod:`hearfuse.upstream.conv_matmul`).

Plain data below both the registry entries (which check a config's ``conv_form``) and the networks
(which run it), so that imports in ``upstream/`` run one way.
"""

CONV_FORMS = ("auto", "conv", "matmul")


def check_conv_form(form: str) -> str:
    if form not in CONV_FORMS:
        raise ValueError(f"conv_form must be one of {', '.join(CONV_FORMS)}, got {form!r}")
    return form
