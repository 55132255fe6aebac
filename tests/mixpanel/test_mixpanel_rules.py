"""Steps 3 to 6: each rule on small hand-made datasets with expected values."""

from __future__ import annotations

from contextlib import closing
from datetime import date, timedelta
from pathlib import Path

import pytest

from database import migrations, rules
from database.connection import connect
from database.errors import ConfigError
from database.event_kinds import load_event_names
from database.settings import Window
from database.tiers_config import load_tiers

WINDOW = Window(date(2024, 6, 1), date(2024, 6, 30))
TIERS_FILE = Path(__file__).resolve().parents[2] / "pipelines" / "mixpanel_pipeline" / "tiers.yaml"


def _ts(day: date, hour: int = 12) -> int:
    return (day - date(1970, 1, 1)).days * 86400 + hour * 3600


@pytest.fixture
def db(tmp_path):
    """A migrated, empty database; `add_user` and `add_event` fill it."""
    conn = connect(tmp_path / "rules.db", create=True)
    migrations.apply_migrations(conn)
    with closing(conn):
        yield conn


def add_user(conn, distinct_id: str, **columns: object) -> None:
    names = ["distinct_id", *columns]
    conn.execute(
        f"INSERT INTO fact_mixpanel_user ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
        [distinct_id, *columns.values()],
    )


_counter = iter(range(10**9))


def add_event(conn, distinct_id, when: int, event="app_open", product=None, revenue=None, iid=None):
    day = (date(1970, 1, 1) + timedelta(days=when // 86400)).isoformat()
    conn.execute(
        "INSERT INTO fact_mixpanel_event (insert_id, event, distinct_id, time, event_date, "
        "product_id, revenue, properties, source_day) VALUES (?, ?, ?, ?, ?, ?, ?, '{}', ?)",
        (iid or f"i{next(_counter)}", event, distinct_id, when, day, product, revenue, day),
    )


def user(conn, distinct_id, *columns):
    return conn.execute(
        f"SELECT {', '.join(columns)} FROM fact_mixpanel_user WHERE distinct_id = ?", (distinct_id,)
    ).fetchone()


def test_abi_attribution_needs_a_non_blank_id(db):
    add_user(db, "campaign", abi_campaign_id="c1")
    add_user(db, "ad_set_only", abi_ad_set_id=" s ")
    add_user(db, "ad_only", abi_ad_id="a")
    add_user(db, "blanks", abi_campaign_id="  ", abi_ad_set_id="\t", abi_ad_id="")
    add_user(db, "none")
    counts = rules.set_abi_attribution(db)
    assert counts == {"users": 5, "with_abi": 3, "without_abi": 2}
    flags = dict(db.execute("SELECT distinct_id, has_abi_attribution FROM fact_mixpanel_user"))
    assert flags == {"campaign": 1, "ad_set_only": 1, "ad_only": 1, "blanks": 0, "none": 0}


def test_abi_flag_is_reset_on_every_run(db):
    add_user(db, "u", abi_campaign_id="c")
    rules.set_abi_attribution(db)
    db.execute("UPDATE fact_mixpanel_user SET abi_campaign_id = NULL")
    rules.set_abi_attribution(db)
    assert user(db, "u", "has_abi_attribution") == (0,)


@pytest.mark.parametrize(
    "blank", ["", " ", "undefined", "NULL", "None", "nil", "(null)", " Undefined "]
)
def test_blank_ids(db, blank):
    add_user(db, blank)
    add_event(db, blank, _ts(WINDOW.end))
    rules.check_broken_users(db, WINDOW)
    assert user(db, blank, "valid_user", "invalid_reason") == (0, "blank_id")


def test_each_broken_reason_and_their_order(db):
    add_user(db, "fine")
    add_event(db, "fine", _ts(WINDOW.start))
    add_user(db, "profile_only")
    add_user(db, "future")
    add_event(db, "future", _ts(WINDOW.end))
    add_event(db, "future", _ts(WINDOW.end + timedelta(days=1), 0))  # first second after END
    add_user(db, "future_only")
    add_event(db, "future_only", _ts(WINDOW.end + timedelta(days=2)))
    add_user(db, "bot")
    for n in range(5001):
        add_event(db, "bot", _ts(WINDOW.end, 0) + n % 86400)
    add_user(db, "busy_not_bot")
    for n in range(5000):
        add_event(db, "busy_not_bot", _ts(WINDOW.end, 0) + n % 86400)
    add_user(db, "null")
    add_event(db, "null", _ts(WINDOW.end + timedelta(days=1), 5))

    counts = rules.check_broken_users(db, WINDOW)

    reasons = dict(db.execute("SELECT distinct_id, invalid_reason FROM fact_mixpanel_user"))
    assert reasons == {
        "fine": None,
        "profile_only": "no_events",
        "future": "future_events",
        "future_only": "no_events,future_events",
        "bot": "bot_activity",
        "busy_not_bot": None,
        "null": "blank_id,no_events,future_events",
    }
    valid = dict(db.execute("SELECT distinct_id, valid_user FROM fact_mixpanel_user"))
    assert valid == {k: int(v is None) for k, v in reasons.items()}
    assert counts == {
        "blank_id": 1,
        "no_events": 3,
        "future_events": 3,
        "bot_activity": 1,
        "valid": 2,
        "invalid": 5,
    }


def test_a_user_becomes_valid_again_when_the_reason_goes(db):
    add_user(db, "u")
    rules.check_broken_users(db, WINDOW)
    assert user(db, "u", "valid_user", "invalid_reason") == (0, "no_events")
    add_event(db, "u", _ts(WINDOW.end))
    rules.check_broken_users(db, WINDOW)
    assert user(db, "u", "valid_user", "invalid_reason") == (1, None)


def test_counts_days_and_revenue_over_the_window(db):
    add_user(db, "u", valid_user=True)
    add_event(db, "u", _ts(WINDOW.start, 1), revenue=0.105)
    add_event(db, "u", _ts(WINDOW.start, 2), revenue=None)
    add_event(db, "u", _ts(WINDOW.start + timedelta(days=3)), revenue=10.0)
    add_event(db, "u", _ts(WINDOW.start + timedelta(days=3), 5), revenue=-3.0)
    add_event(db, "u", _ts(WINDOW.start - timedelta(days=1)), revenue=100.0)  # before the window
    add_event(db, "u", _ts(WINDOW.end + timedelta(days=1)), revenue=100.0)  # after it
    add_user(db, "idle", valid_user=True)
    totals = rules.count_user_events(db, WINDOW)
    assert user(db, "u", "event_count", "active_days", "revenue_usd") == (4, 2, 7.11)
    assert user(db, "idle", "event_count", "active_days", "revenue_usd") == (0, 0, 0.0)
    assert totals["events_counted"] == totals["window_events_in_db"] == 4


def test_products_and_lifecycles(db):
    add_user(db, "u", valid_user=True)
    day = WINDOW.start
    # valid: trial started, converted, renewed
    add_event(db, "u", _ts(day, 1), "rc_trial_started_event", "monthly", 0)
    add_event(db, "u", _ts(day, 2), "rc_trial_converted_event", "monthly", 9.99)
    add_event(db, "u", _ts(day, 3), "rc_renewal_event", "monthly", 9.99)
    # invalid: starts with a renewal
    add_event(db, "u", _ts(day, 1), "rc_renewal_event", "yearly", 59.99)
    add_event(db, "u", _ts(day, 2), "rc_initial_purchase_event", "yearly", 59.99)
    # invalid: a conversion without an earlier trial start
    add_event(db, "u", _ts(day, 1), "rc_initial_purchase_event", "weekly", 2.99)
    add_event(db, "u", _ts(day, 2), "rc_trial_converted_event", "weekly", 2.99)
    # valid: a one-off purchase
    add_event(db, "u", _ts(day, 4), "rc_non_subscription_purchase_event", "coins", 4.99)
    # same second: insert_id breaks the tie (a0 before b0), so the start comes first
    add_event(db, "u", _ts(day, 5), "rc_trial_started_event", "tie", 0, iid="a0")
    add_event(db, "u", _ts(day, 5), "rc_trial_cancelled_event", "tie", 0, iid="b0")
    # an empty product id is no product; an invalid user gets no products
    add_event(db, "u", _ts(day, 6), "app_open", "  ")
    add_user(db, "bad", valid_user=False)
    add_event(db, "bad", _ts(day, 1), "rc_initial_purchase_event", "monthly", 9.99)

    totals = rules.count_user_events(db, WINDOW)

    products = dict(
        db.execute(
            "SELECT product_id, valid_lifecycle FROM fact_user_products WHERE distinct_id='u'"
        )
    )
    assert products == {"monthly": 1, "yearly": 0, "weekly": 0, "coins": 1, "tie": 1}
    assert db.execute(
        "SELECT COUNT(*) FROM fact_user_products WHERE distinct_id='bad'"
    ).fetchone() == (0,)
    assert user(db, "u", "valid_product_count") == (3,)
    assert totals["user_products"] == 5 and totals["valid_lifecycle_products"] == 3


def test_products_are_rebuilt_not_appended(db):
    add_user(db, "u", valid_user=True)
    add_event(db, "u", _ts(WINDOW.start), "rc_initial_purchase_event", "p", 1.0)
    rules.count_user_events(db, WINDOW)
    rules.count_user_events(db, WINDOW)
    assert db.execute("SELECT COUNT(*) FROM fact_user_products").fetchone() == (1,)


@pytest.mark.parametrize(
    ("revenue", "days", "products", "tier"),
    [
        (100.0, 0, 0, "premium"),
        (50.0, 0, 2, "premium"),
        (50.0, 0, 1, "standard"),
        (99.99, 40, 1, "standard"),
        (20.0, 0, 0, "standard"),
        (0.01, 30, 0, "standard"),
        (0.01, 29, 0, "basic"),
        (19.99, 0, 5, "basic"),
        (0.0, 10, 0, "basic"),
        (0.0, 9, 3, "free"),
        (-5.0, 40, 0, "basic"),
        (-5.0, 9, 0, "free"),
    ],
)
def test_tier_rules(db, revenue, days, products, tier):
    add_user(
        db,
        "u",
        valid_user=True,
        revenue_usd=revenue,
        active_days=days,
        valid_product_count=products,
    )
    rules.assign_economic_tier(db, load_tiers(TIERS_FILE))
    assert user(db, "u", "economic_tier") == (tier,)


def test_invalid_users_get_no_tier(db):
    add_user(db, "u", valid_user=False, revenue_usd=500.0, active_days=60, valid_product_count=3)
    add_user(db, "v", valid_user=True, revenue_usd=0.0, active_days=0, valid_product_count=0)
    counts = rules.assign_economic_tier(db, load_tiers(TIERS_FILE))
    assert user(db, "u", "economic_tier") == (None,)
    assert counts == {"premium": 0, "standard": 0, "basic": 0, "free": 1, "no_tier": 1}


def test_tiers_file_defaults():
    assert load_tiers(TIERS_FILE) == rules.TierThresholds()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("premium: [1", "not valid YAML at line"),
        ("- 1\n", "expected a mapping"),
        (
            "premium:\n  min_revenue_usd: 100\n",
            "'premium.min_revenue_usd_with_products' is missing",
        ),
        ("premiun: {}\n", "unknown key 'premiun' (did you mean 'premium'?)"),
        (
            TIERS_FILE.read_text().replace("min_revenue_usd: 20", "min_revenue_usd: lots"),
            "key 'standard.min_revenue_usd' must be a number >= 0, got 'lots'",
        ),
        (
            TIERS_FILE.read_text().replace("min_active_days: 10", "min_active_days: 2.5"),
            "key 'basic.min_active_days' must be a whole number >= 0, got 2.5",
        ),
        (
            TIERS_FILE.read_text().replace("min_active_days: 10", "min_actve_days: 10"),
            "unknown key 'basic.min_actve_days' (did you mean 'min_active_days'?)",
        ),
        (
            TIERS_FILE.read_text().replace("min_active_days: 10", "min_active_days: .inf"),
            "key 'basic.min_active_days' must be a whole number >= 0, got inf",
        ),
        (
            TIERS_FILE.read_text().replace("min_revenue_usd: 20", "min_revenue_usd: .nan"),
            "key 'standard.min_revenue_usd' must be a number >= 0, got nan",
        ),
    ],
)
def test_bad_tiers_file_names_file_and_key(tmp_path, text, message):
    path = tmp_path / "tiers.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_tiers(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


BOMB = "\n".join(
    [
        'events:\n  "Sub": [&a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"],',
        *(f"    &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]," for n in range(1, 9)),
        "    *a8]",
    ]
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "events: " + "[" * 50_000 + "]" * 50_000 + "\n",
            "nested too deeply to be a configuration",
        ),
        (BOMB, "event 'Sub' maps to [["),
        ("events:\n  " + "x" * 300_000 + ": renewal\n", "larger than 256 KB"),
        ('events:\n  "' + "y" * 500 + '": renewal\n', "must be text of 1 to 255 characters"),
        ("events:\n  12: renewal\n", "event name 12 must be text"),
        ("events:\n  x: !!python/object:os.system [ls]\n", "not valid YAML"),
    ],
    ids=["deep", "alias-bomb", "huge", "long-name", "int-name", "python-tag"],
)
def test_hostile_event_names_files_are_one_short_line(tmp_path, text, message):
    path = tmp_path / "event_names.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_event_names(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 500


@pytest.mark.parametrize(
    "text",
    [
        "premium: " + "[" * 50_000 + "]" * 50_000 + "\n",
        BOMB.replace('events:\n  "Sub":', "premium:\n  min_revenue_usd:"),
    ],
    ids=["deep", "alias-bomb"],
)
def test_hostile_tiers_files_are_one_short_line(tmp_path, text):
    path = tmp_path / "tiers.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_tiers(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 500
