"""Scheduled jobs: daily settlement and orphaned-image cleanup, one code path for the
EventBridge Scheduler event, `sam local invoke` and the `giftmarket jobs` CLI."""
