"""The two chapter-07 benchmarks run end to end on tiny sizes (``--quick``) and write the JSON the
notebook reads: both test regrets in part 1, every method and budget in part 2."""

import json
import math
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def _run(script, out, *args):
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(out), *args],
                   check=True, cwd=ROOT, capture_output=True, text=True, timeout=900)
    return json.loads(out.read_text())


def test_meta_hpo_nets_quick_writes_both_regrets(tmp_path):
    res = _run("meta_hpo_nets.py", tmp_path / "nets.json")
    assert set(res["summary"]) == {"same", "retrained"}
    for group in ("test", "ood"):
        for r in res["runs"][group]:
            # every regret is measured against a best that includes the method itself: never below 0
            for m in ("random", "tpe", "gp", "hgd", "shared+hgd"):
                for same, fresh in zip(r[m], r["retrained"][m]):
                    assert (math.isnan(same) or same >= -1e-9) and (math.isnan(fresh) or fresh >= -1e-9)
            assert r["predictor"]["retrained"] >= -1e-9 and r["shared"]["regret"] >= -1e-9
            assert 0 <= r["diverged"]["random"] <= 4
        s = res["summary"]["retrained"][group]
        assert s["predictor"]["lo"] <= s["predictor"]["mean"] <= s["predictor"]["hi"]


def test_meta_hpo_tables_quick_writes_every_method(tmp_path):
    res = _run("meta_hpo_tables.py", tmp_path / "tables.json", "--no-gp")
    for fam in res["families"].values():
        assert {"random", "tpe", "portfolio", "mixture"} <= set(fam["regret"])
        for s in fam["regret"].values():
            assert len(s["mean"]) == fam["budget"] and all(0 <= v <= 1 for v in s["mean"])
