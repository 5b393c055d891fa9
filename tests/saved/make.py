"""Write ``tests/saved``: run from the repository root with the radam build whose
files the tests must keep loading (see ``cases.py``)."""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from saved.cases import CASES, encode_array, encode_state_dict, grads_of, params_of  # noqa: E402


def main() -> None:
    out = {}
    for name, (cls, options, _, _, steps) in CASES.items():
        params = params_of(name)
        opt = cls(params, **options)
        for k in range(steps):
            opt.step(grads_of(params, k))
        sd = opt.state_dict()
        saved_params = [p.copy() for p in params]
        opt.save(os.path.join(HERE, f"{name}.ckpt"))
        grads = grads_of(params, steps)
        opt.step(grads)
        after = opt.state_dict()["state"]
        out[name] = {
            "params": [encode_array(p) for p in saved_params],
            "state_dict": encode_state_dict(sd),
            "grads": [encode_array(g) for g in grads],
            "params_after": [encode_array(p) for p in params],
            "state_after": {
                str(i): {k: encode_array(v) for k, v in e.items() if hasattr(v, "dtype")}
                for i, e in after.items()
            },
        }
    with open(os.path.join(HERE, "state_dicts.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
