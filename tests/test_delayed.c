/*
 * test_delayed.c - delayed publish (shmq_publish_delayed, src/publish.c): never delivered before
 * its due time, delivered after it, and the due time kept by the log through every crash window
 * and segment loss.
 *
 *  - not_before_due: a message published with a delay is not received while its due time is
 *    ahead (receives with a short timeout come back empty), a message published after it without
 *    a delay is received first, and it is received once due. On a busy machine it may come late:
 *    only "not before" is asserted, never "exactly at".
 *  - segment_loss_restores_it_delayed: the segment is lost during the delay; the rebuild
 *    restores it DELAYED with what is left of its delay (from its PUBLISH record's due time):
 *    not delivered before, delivered after.
 *  - checkpointed_delay_survives_retention: the log moves on, maintenance checkpoints the
 *    delayed message and deletes the file of its original record; a rebuild still restores it
 *    DELAYED.
 *  - killed_after_log_restores_it_delayed: a producer killed after its PUBLISH record, before
 *    parking the slot (crash point publish_after_log); the segment is lost before maintenance
 *    frees the reservation: the rebuild restores the message DELAYED, never READY.
 *  - killed_before_park_is_aborted: a producer killed after it stored the due time, before its
 *    CAS to DELAYED (publish_delayed_before_park); maintenance frees the reservation and logs
 *    ACK|ABORT, as for any publish that never returned, so a rebuild does not bring it back.
 *  - no_log: with durability NONE the delay works the same.
 *  - stopped_between_clocks_logs_no_early_due_time: a producer stopped for 3 s between the two
 *    clock readings that turn its due time into wall-clock time (due_between_clocks); the
 *    wall clock was read first, so the log said due 3 s early, and a rebuild then restored a
 *    5 s delay READY after 3 s.
 */
#include "helpers.h"

TestSuite(delayed, .fini = h_cleanup, .timeout = 240);

/* A margin for the clocks: the wall clock of the log and the monotonic one of the segment are
 * read at slightly different instants, each truncated to ms. */
#define MARGIN_MS 20

/*
 * Receive from q until the message with payload want arrives (maintaining the queue as the
 * watchdog would), at most 30 s. Every message received before it is acked; its receipt time
 * (after the receive returned) must not be before not_before_ms. Returns the receipt time.
 */
static int64_t receive_when_due(shmq_t *q, const char *want, int64_t not_before_ms)
{
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "due", &c), 0);
    int64_t until = h_now_ms() + 30000, got = -1;
    while (got < 0 && h_now_ms() < until) {
        shmq_maintain(q, NULL);
        shmq_msg_t m;
        int64_t before = h_now_ms();
        int rc = shmq_receive(c, &m, 20);
        if (rc == -ETIMEDOUT || rc == -EAGAIN) {
            continue;
        }
        h_assert_rc(rc, 0);
        int64_t now = h_now_ms();
        if (m.len == strlen(want) && memcmp(m.data, want, m.len) == 0) {
            cr_assert_geq(now, not_before_ms,
                          "delivered %lld ms before its due time (receive began %lld ms before)",
                          (long long)(not_before_ms - now), (long long)(not_before_ms - before));
            got = now;
        }
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    shmq_consumer_close(c);
    cr_assert_geq(got, 0, "the delayed message '%s' was not delivered within 30 s", want);
    return got;
}

/* Long enough that the empty receives before the due time happen even when the machine stalls
 * for a second between the publish and the loop, as a loaded ASan run can. */
enum { DUE_MS = 4000 };

Test(delayed, not_before_due)
{
    const char *name = h_qname("due");
    shmq_config_t cfg = h_log_config(16);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    int64_t t0 = h_now_ms();
    uint64_t id_late = 0, id_now = 0;
    h_assert_rc(shmq_publish_delayed(q, "late", 4, DUE_MS, &id_late), 0);
    h_assert_rc(shmq_publish(q, "now", 3, &id_now), 0);
    cr_assert_gt(id_now, id_late, "ids stay in publish order");
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.delayed, 1, "delayed %u", st.delayed);
    cr_assert_eq(st.ready, 1, "ready %u", st.ready);

    /* the undelayed one comes first; the delayed one not while its due time is ahead */
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 5000), 0);
    cr_assert_eq(m.id, id_now, "got id %llu first", (unsigned long long)m.id);
    h_assert_rc(shmq_ack(c, &m), 0);
    int empty = 0;
    while (h_now_ms() < t0 + DUE_MS - 200) {
        shmq_maintain(q, NULL);
        int rc = shmq_receive(c, &m, 20);
        if (rc == 0 && h_now_ms() < t0 + DUE_MS)
            cr_assert_fail("the delayed message came %lld ms early",
                           (long long)(t0 + DUE_MS - h_now_ms()));
        if (rc == 0)
            break; /* the machine stalled past the due time: nothing left to check here */
        empty++;
    }
    shmq_consumer_close(c);
    cr_assert_gt(empty, 0, "no empty receive was made before the due time");
    receive_when_due(q, "late", t0 + DUE_MS);
    shmq_close(q);
}

Test(delayed, segment_loss_restores_it_delayed)
{
    const char *name = h_qname("loss");
    shmq_config_t cfg = h_log_config(16);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_publish_delayed(q, "late", 4, 3000, NULL), 0);
    h_assert_rc(shmq_publish(q, "now", 3, NULL), 0);
    shmq_close(q);
    h_assert_rc(shmq_unlink_segment(name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, NULL, &rep), 0);
    cr_assert_eq(rep.restored, 2, "restored %llu", (unsigned long long)rep.restored);
    cr_assert_eq(rep.delayed, 1, "delayed %llu (the delay was lost in the rebuild)",
                 (unsigned long long)rep.delayed);
    h_assert_rc(shmq_open(name, &q), 0);
    receive_when_due(q, "now", 0);
    receive_when_due(q, "late", t0 + 3000 - MARGIN_MS);
    shmq_close(q);
}

Test(delayed, checkpointed_delay_survives_retention)
{
    const char *name = h_qname("ckpt");
    shmq_config_t cfg = h_log_config(8);
    cfg.max_msg_size = 30000;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_lease_acquire(q, 600000, 1), 0); /* maintenance is ours alone */
    h_assert_rc(shmq_publish_delayed(q, "late", 4, 600000, NULL), 0);
    static char big[29000];
    memset(big, 'b', sizeof big);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_maint_report_t mr;
    uint64_t checkpointed = 0;
    for (int i = 0; i < 12; i++) { /* the log moves on, files behind are checkpointed, deleted */
        h_assert_rc(shmq_publish(q, big, sizeof big, NULL), 0);
        shmq_msg_t m;
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        h_assert_rc(shmq_ack(c, &m), 0);
        h_assert_rc(shmq_maintain(q, &mr), 0);
        checkpointed += mr.checkpointed;
    }
    shmq_consumer_close(c);
    cr_assert_gt(checkpointed, 0, "the delayed message was never checkpointed");
    shmq_close(q);
    h_assert_rc(shmq_unlink_segment(name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, NULL, &rep), 0);
    cr_assert_eq(rep.restored, 1, "restored %llu", (unsigned long long)rep.restored);
    cr_assert_eq(rep.delayed, 1, "delayed %llu", (unsigned long long)rep.delayed);
}

static const char *crash_name;

static int delayed_producer(void *arg)
{
    setenv("SHMQ_CRASH_AT", (const char *)arg, 1);
    shmq_t *q;
    if (shmq_open(crash_name, &q))
        return 10;
    shmq_publish_delayed(q, "late", 4, 600000, NULL);
    return 12; /* not killed at its crash point */
}

/* A producer killed at crash point point while publishing "late" with a 600 s delay. */
static void kill_delayed_producer(const char *point)
{
    pid_t k = h_fork_gated(delayed_producer, (void *)point);
    shmq_config_t cfg = h_log_config(8);
    shmq_t *q;
    h_assert_rc(shmq_create(crash_name, &cfg, &q), 0);
    shmq_close(q);
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFSIGNALED(st), "the producer was not killed at %s", point);
}

Test(delayed, killed_after_log_restores_it_delayed)
{
    crash_name = h_qname("klog");
    kill_delayed_producer("publish_after_log");
    h_assert_rc(shmq_unlink_segment(crash_name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(crash_name, NULL, &rep), 0);
    cr_assert_eq(rep.restored, 1, "restored %llu", (unsigned long long)rep.restored);
    cr_assert_eq(rep.delayed, 1, "restored READY: it would be delivered 600 s early");
    shmq_t *q;
    h_assert_rc(shmq_open(crash_name, &q), 0);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_maintain(q, NULL);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 50), -ETIMEDOUT);
    shmq_consumer_close(c);
    shmq_close(q);
}

Test(delayed, killed_before_park_is_aborted)
{
    crash_name = h_qname("kpark");
    kill_delayed_producer("publish_delayed_before_park");
    shmq_t *q;
    h_assert_rc(shmq_open(crash_name, &q), 0);
    shmq_maint_report_t mr;
    h_assert_rc(shmq_maintain(q, &mr), 0);
    cr_assert_eq(mr.reservations_freed, 1, "the dead producer's reservation was not freed");
    shmq_close(q);
    h_assert_rc(shmq_unlink_segment(crash_name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(crash_name, NULL, &rep), 0);
    cr_assert_eq(rep.restored, 0,
                 "a publish that never returned and whose reservation was freed came back");
}

Test(delayed, no_log)
{
    const char *name = h_qname("nolog");
    shmq_config_t cfg = h_small_config(8, 64, 16);
    cfg.durability = SHMQ_DURABILITY_NONE;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_publish_delayed(q, "late", 4, 300, NULL), 0);
    receive_when_due(q, "late", t0 + 300);
    shmq_close(q);
}

static int stalled_delayed_producer(void *arg)
{
    (void)arg;
    setenv("SHMQ_CRASH_AT", "due_between_clocks", 1);
    setenv("SHMQ_CRASH_SIGNAL", "STOP", 1);
    shmq_t *q;
    if (shmq_open(crash_name, &q))
        return 10;
    int rc = shmq_publish_delayed(q, "late", 4, 5000, NULL);
    shmq_close(q);
    return rc == 0 ? 0 : 11;
}

Test(delayed, stopped_between_clocks_logs_no_early_due_time)
{
    crash_name = h_qname("kclk");
    pid_t k = h_fork_gated(stalled_delayed_producer, NULL);
    shmq_config_t cfg = h_log_config(8);
    shmq_t *q;
    h_assert_rc(shmq_create(crash_name, &cfg, &q), 0);
    h_assert_rc(shmq_close(q), 0);
    int64_t t0 = h_now_ms(); /* before the publish: its due time is after t0 + 5000 */
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, WUNTRACED, &st), 0);
    cr_assert(WIFSTOPPED(st), "the producer did not stop between its clock readings");
    h_sleep_ms(3000); /* the stall under test, not a wait for an event */
    kill(k, SIGCONT);
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the producer's publish failed");
    h_assert_rc(shmq_unlink_segment(crash_name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(crash_name, NULL, &rep), 0);
    cr_assert_eq(rep.restored, 1, "restored %llu", (unsigned long long)rep.restored);
    if (h_now_ms() < t0 + 5000) /* else the delay is over anyway: nothing to tell */
        cr_assert_eq(rep.delayed, 1, "restored READY %lld ms before its due time",
                     (long long)(t0 + 5000 - h_now_ms()));
    h_assert_rc(shmq_open(crash_name, &q), 0);
    receive_when_due(q, "late", t0 + 5000);
    shmq_close(q);
}
