"""Every session-state and widget key of the dashboard, in one place."""

from __future__ import annotations


class Keys:
    """Session-state and widget keys. Widgets always get an explicit key from here."""

    # password gate
    AUTHENTICATED = "auth_ok"
    PASSWORD = "auth_password"
    LOGIN = "auth_login"

    # messages carried to the next render, and an action waiting for confirmation
    FLASH = "flash_messages"
    FLASH_SHOWN = "flash_shown"
    FLASH_REPLAY = "flash_replay"
    PENDING = "pending_action"
    CONFIRM_YES = "confirm_yes"
    CONFIRM_NO = "confirm_no"

    # pipelines page
    PIPELINE = "pipelines_choice"
    STEP = "pipelines_step"
    RUN_ALL = "run_all"
    RUN_OUTDATED = "run_outdated"
    CANCEL = "cancel_run"
    RESET_ALL = "reset_all"
    REFRESH = "refresh_discovery"
    RUN_STEP = "run_step"
    RUN_FROM = "run_from"
    RUN_TO = "run_to"
    MARK_TESTED = "mark_tested"
    MARK_UNTESTED = "mark_untested"
    RESET_STEP = "reset_step"
    STEP_LOG_DOWNLOAD = "step_log_download"
    ETA_CACHE = "eta_cache"

    # runs page
    RUNS_PIPELINE = "runs_pipeline"
    RUNS_STATES = "runs_states"
    RUNS_RUN = "runs_run"
    RUNS_LOG_DOWNLOAD = "runs_log_download"  # + step name

    # tiers page
    TIERS_RUN = "tiers_run_pipeline"
    TIERS_TIER = "tiers_filter_tier"
    TIERS_COUNTRY = "tiers_filter_country"
    TIERS_ABI = "tiers_filter_abi"
    TIERS_SEARCH = "tiers_filter_search"
    TIERS_PAGE = "tiers_page_number"
    TIERS_CSV = "tiers_csv_download"


class Params:
    """Query parameters, so links to a pipeline, a step or a run can be shared."""

    PIPELINE = "pipeline"
    STEP = "step"
    RUN = "run"
