# libsaga issue 9 item 5: public-name renames (GNU sed -E; idempotent).
# Run from the repo root over C sources, headers, docs and ABI lists only (a
# JSON key "event" in tools/console/www stays):
#   git ls-files -z '*.c' '*.h' '*.md' '*.txt' ':!docs/api/README.md' |
#       xargs -0 sed -E -i -f scripts/renames-0.2.sed
# (docs/api/README.md lists the old names on purpose.)
s/\bsaga_stats\b/saga_engine_counters/g
s/\bsaga_participant_stats\b( +\*| +[a-z_][a-z0-9_]*[;,=)[]| *[;){])/saga_participant_counters\1/g
s/\bsaga_participant_stats_get\b/saga_participant_stats/g
s/\bsaga_tcp_stats\b/saga_tcp_counters/g
s/\bSAGA_TCP_STATS_VERSION\b/SAGA_TCP_COUNTERS_VERSION/g
s/\bsaga_kafka_stats\b/saga_kafka_counters/g
s/\bSAGA_KAFKA_STATS_VERSION\b/SAGA_KAFKA_COUNTERS_VERSION/g
# "Event" is a domain event; a journal entry has a kind.
s/\bsaga_event_name\b/saga_journal_kind_name/g
s/\bsaga_event\b/saga_journal_kind/g
s/\bSAGA_EV_/SAGA_JOURNAL_/g
s/(\.|->)event\b([^(]|$)/\1kind\2/g
# One log callback type.
s/\bsaga_(tcp|kafka)_log_fn\b/saga_log_fn/g
# One place for a constructor's failure reason.
s/\bsaga_store_open_errmsg\b/saga_open_errmsg/g
s/\bsaga_journal_kind event;/saga_journal_kind kind;/
