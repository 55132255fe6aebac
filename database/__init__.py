"""Analytics data layer for the Mixpanel pipeline: settings, migrations, loading, rules, queries."""
