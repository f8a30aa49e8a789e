"""PrivacyLedger: counts, records, caching, merge, checkpoint copies."""

from __future__ import annotations

import copy
import json
import math
import pickle

import pytest

from fedopt.engine.ledger import Ledger, merge_ledgers
from fedopt.errors import ConfigError
from fedopt.privacy import PrivacyLedger, diff2_calibration, epsilon_spent
from fedopt.privacy import ledger as ledger_module
from fedopt.results.rundir import dumps_strict

pytest.importorskip("dp_accounting")

DELTA = 1e-5
CAL = diff2_calibration(3.0, DELTA, 2000, 6, 10, 1651)


def _ledger(restart: int = 0, difference: int = 0, **kw) -> PrivacyLedger:
    led = PrivacyLedger(DELTA, kw.pop("threat_model", "central"), CAL.mechanisms(), **kw)
    led.spend("restart", restart)
    led.spend("difference", difference)
    return led


def test_record_of_a_whole_run():
    led = PrivacyLedger(DELTA, "central", CAL.mechanisms(), with_pld=True)
    assert isinstance(led, Ledger)
    for r in range(2000):
        led.spend("restart" if r % 6 == 0 else "difference")
    rec = led.to_record()
    assert rec["rounds"] == {"difference": 1666, "restart": 334}
    assert rec["epsilon_rdp"] == epsilon_spent(CAL.parts(), DELTA)
    assert rec["epsilon_rdp"] == pytest.approx(2.4959, abs=1e-4)
    assert rec["epsilon_pld"] == pytest.approx(2.2993, abs=1e-4)
    assert rec["delta"] == DELTA and rec["threat_model"] == "central"
    assert rec["noise_multipliers"] == {"difference": CAL.z2, "restart": CAL.z1}
    assert rec["sample_rate"] == 1.0
    assert json.loads(dumps_strict(rec)) == rec
    assert "epsilon_pld" not in _ledger(1, 1).to_record()
    assert _ledger().to_record()["epsilon_rdp"] == 0.0


def test_records_are_cached_until_the_counts_change(monkeypatch):
    calls = []

    def counting(parts, delta, method="rdp"):
        calls.append(method)
        return epsilon_spent(parts, delta, method)

    monkeypatch.setattr(ledger_module, "epsilon_spent", counting)
    led = _ledger(3, 10, with_pld=True)
    first = led.to_record()
    assert calls == ["rdp", "pld"]
    assert led.to_record() == first and calls == ["rdp", "pld"]
    led.spend("difference", 0)
    led.to_record()
    assert len(calls) == 2
    led.spend("difference")
    second = led.to_record()
    assert len(calls) == 4 and second["epsilon_rdp"] > first["epsilon_rdp"]
    first["rounds"]["restart"] = 99  # records are copies
    assert led.to_record()["rounds"]["restart"] == 3


def test_merge_adds_counts_whatever_the_split():
    whole = _ledger(334, 1666)
    a, b = _ledger(100, 800), _ledger(234, 866)
    merged = a.merge(b)
    assert merged.to_record() == whole.to_record() == b.merge(a).to_record()
    assert a.counts == {"difference": 800, "restart": 100}  # operands unchanged
    assert b.counts == {"difference": 866, "restart": 234}
    # The server's worker is the only one keeping a ledger: merge_ledgers passes it on.
    parts = [{}, {"privacy": whole}, {}]
    assert merge_ledgers(parts)["privacy"] is whole
    two = merge_ledgers([{"privacy": a}, {"privacy": b}])["privacy"]
    assert two.to_record() == whole.to_record()


@pytest.mark.parametrize(
    "other",
    [
        lambda: PrivacyLedger(1e-6, "central", CAL.mechanisms()),
        lambda: PrivacyLedger(DELTA, "local", CAL.mechanisms()),
        lambda: PrivacyLedger(DELTA, "central", {"restart": CAL.z1}),
        lambda: PrivacyLedger(DELTA, "central", CAL.mechanisms(), sample_rate=0.5),
        lambda: PrivacyLedger(DELTA, "central", CAL.mechanisms(), with_pld=True),
    ],
)
def test_merge_refuses_different_setups(other):
    with pytest.raises(ValueError, match="different set-ups"):
        _ledger(1, 1).merge(other())


def test_merge_refuses_other_ledgers():
    with pytest.raises(TypeError, match="cannot merge a PrivacyLedger with dict"):
        _ledger().merge({})


def test_deepcopy_and_pickle():
    led = _ledger(10, 50, with_pld=True)
    rec = led.to_record()  # fills the cache, which travels with the copies
    for twin in (copy.deepcopy(led), pickle.loads(pickle.dumps(led))):
        assert twin.to_record() == rec
        twin.spend("restart")
        assert twin.counts["restart"] == 11 and led.counts["restart"] == 10
        assert twin.to_record()["epsilon_rdp"] > rec["epsilon_rdp"]
    assert led.to_record() == rec


def test_local_threat_model_reports_the_per_message_epsilon():
    central = _ledger(334, 1666).to_record()
    local = _ledger(334, 1666, threat_model="local", workers=10).to_record()
    assert local["epsilon_rdp"] == central["epsilon_rdp"]
    scaled = [type(p)(p.noise_multiplier / math.sqrt(10), p.count) for p in CAL.parts()]
    assert local["epsilon_rdp_message"] == epsilon_spent(scaled, DELTA)
    assert local["epsilon_rdp_message"] > 3 * local["epsilon_rdp"]
    assert "epsilon_rdp_message" not in _ledger(1, 1, threat_model="local").to_record()


def test_noiseless_ledger_spends_infinity():
    led = PrivacyLedger(DELTA, "central", {"restart": 0.0, "difference": 0.0})
    led.spend("restart")
    rec = led.to_record()
    assert rec["epsilon_rdp"] == math.inf
    assert json.loads(dumps_strict(rec))["epsilon_rdp"] is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"delta": 0.0}, r"^algorithm\.delta: .*got 0\.0"),
        ({"threat_model": "trusted"}, r"^threat_model: .*'trusted'"),
        ({"mechanisms": {}}, r"^mechanisms: "),
        ({"mechanisms": {"restart": -1.0}}, r"^noise_multiplier: .*-1\.0"),
        ({"sample_rate": 0.0}, r"^sample_rate: "),
        ({"workers": 0}, r"^workers: "),
    ],
)
def test_bad_setup(kwargs, match):
    args = {"delta": DELTA, "threat_model": "central", "mechanisms": CAL.mechanisms(), **kwargs}
    with pytest.raises(ConfigError, match=match):
        PrivacyLedger(**args)


def test_bad_spend():
    led = _ledger()
    with pytest.raises(KeyError, match=r"'restrat'.*known: difference, restart"):
        led.spend("restrat")
    with pytest.raises(ConfigError, match=r"^count: .*got -1"):
        led.spend("restart", -1)
    assert led.counts == {"difference": 0, "restart": 0}
