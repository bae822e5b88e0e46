"""The parts of the cross-team contract that deploy/ must agree with, written down once.

These are the names the server promises (flags, metrics, health services); the deploy tests check
the manifests, alerts and dashboard against them, and the live tests check the real server
against them too, so a rename on either side fails a test instead of a production rollout.
"""

HEALTH_SERVICES = ("", "cab.v1.MaskPredictor")
SERVICE_NAME = "cab.v1.MaskPredictor"

# cab-server flags; each is also read from the environment as CAB_<FLAG IN UPPER CASE>.
FLAGS = (
    "listen", "metrics_listen", "port_file", "backend", "plugin_dir", "threads", "max_queue",
    "max_tokens", "max_heads", "max_head_dim", "max_blocks", "max_message_bytes", "max_sessions", "max_session_bytes",
    "max_total_bytes", "session_idle_timeout_s", "tls_cert", "tls_key", "tls_client_ca",
    "auth_token_file", "drain_grace_s", "drain_lame_duck_s", "max_batch", "max_queue_delay_us",
)
ENV_FLAGS = {"CAB_" + f.upper(): f for f in FLAGS}
BACKENDS = ("cpu", "cuda", "auto")

# Prometheus metric families the server exports, by type.
COUNTERS = (
    "cab_requests_total", "cab_received_bytes_total", "cab_sent_bytes_total",
    "cab_sessions_closed_total",
)
HISTOGRAMS = ("cab_request_duration_seconds", "cab_stage_duration_seconds")
GAUGES = (
    "cab_active_streams", "cab_active_sessions", "cab_session_memory_bytes", "cab_queue_depth",
    "cab_inflight_requests", "cab_build_info",
)
STAGES = ("decode", "coarsen", "curvature", "select", "encode")
SESSION_CLOSE_REASONS = ("completed", "cancelled", "idle_timeout", "error")
# Labels each family carries (besides what Prometheus adds: job, instance, ...).
LABELS = {
    "cab_requests_total": {"method", "code"},
    "cab_request_duration_seconds": {"method"},
    "cab_stage_duration_seconds": {"stage"},
    "cab_sessions_closed_total": {"reason"},
    "cab_build_info": {"version", "backend"},
}
# Metrics an HPA can scale on: per-pod load gauges.
SCALING_GAUGES = ("cab_inflight_requests", "cab_queue_depth")


def series_names():
    """Every series name a query may use (histograms expose _bucket, _sum and _count)."""
    names = set(COUNTERS) | set(GAUGES)
    for h in HISTOGRAMS:
        names |= {h + "_bucket", h + "_sum", h + "_count"}
    return names
