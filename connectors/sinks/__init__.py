"""Alert sinks: PagerDuty and Slack."""
