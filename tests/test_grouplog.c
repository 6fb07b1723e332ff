/*
 * test_grouplog.c - the log carries consumer groups (issue 18; docs/DESIGN.md "The log with
 * groups", docs/FORMAT.md section 9): a segment loss restores every group in its state.
 *
 *  - segment_loss_restores_each_group_in_its_state: groups in different states (one acked
 *    everything, one has a message in flight, one a dead letter, one a delayed nack, one made
 *    after the first messages, one deleted) and "default" acked one: after the segment is lost
 *    and rebuilt from the log, each group gets back exactly what it still held, in its state;
 *    the deleted group is gone, the late one gets only what was published after it.
 *  - a_rebuilt_message_stays_held_for_the_groups_that_hold_it: the rebuilt slots' release
 *    count (slot.holders) names the groups holding them, so group 0's acks free nothing.
 *  - an_index_reused_after_a_delete_gets_only_its_own_messages (rule R-G): a group deleted and
 *    another made at its index: the new one gets nothing the old one was given.
 *  - retention_keeps_groups_and_held_messages: a message only group "a" holds (HELD slot) and
 *    the group's create record lie many files behind: maintenance copies both (checkpoint,
 *    GROUP copy) and deletes the old files; a rebuild still has the group and the message.
 *  - a_groups_redrive_and_purge_survive_a_segment_loss: shmq_dlq_*_group's records are the
 *    group's (fails with a purge logged as group 0's, or a redrive's PUBLISH without its mask).
 *  - crash points of create and delete (group_create_before_record, group_create_after_record,
 *    group_create_before_mask, group_delete_after_mask): the segment and the log agree after
 *    the repair, and after a rebuild (the first two fail without the roll-forward of a CREATING
 *    entry, the last without maintenance's delete record before it frees the entry).
 *  - random_rounds_of_segment_losses_keep_every_group: six segment losses, random acks, nacks
 *    and deliveries left in flight in four groups, a group deleted and another made at its
 *    index: at the end each group gets exactly what it still held (fails when recovery ignores
 *    the group byte of the records).
 *  - a_name_made_again_after_a_killed_delete_is_one_group_after_a_rebuild (review9): a deleter
 *    killed before its record, the name made again, the segment lost: one group of that name
 *    (fails when recovery restores both creates).
 *  - a_fenced_slot_keeps_the_record_another_group_needs (review9): group 0 done while a taken-back
 *    reader lingers (slot FENCED), group a holds it delayed, retention runs, segment lost: a
 *    still has it (fails when a FENCED slot pins no file and is never checkpointed).
 *  - a_maintainer_killed_inside_a_group_copy_keeps_the_record_file (group_copy_before_append):
 *    the next pass keeps the file of group a's create record, a rebuild still has a (fails
 *    when the copy raises the entry's pin before its append: a lost).
 *  - publish_killed_between_fanout_and_record_leaves_nothing (fanout_after_prepare, which now
 *    comes before the PUBLISH record): the reservation and its cells come back, no record.
 *
 * shmq-test-label: threaded
 */
#include "helpers.h"

#include <dirent.h>

TestSuite(grouplog, .fini = h_cleanup, .timeout = 240);

static shmq_config_t glog_config(uint32_t capacity, uint32_t max_groups)
{
    shmq_config_t cfg = h_log_config(capacity);
    cfg.max_groups = max_groups;
    cfg.max_attempts = 2;
    cfg.backoff_base_ms = 0; /* a nack without a delay is ready again at once */
    return cfg;
}

/* Lose the segment and rebuild it from the log; open the rebuilt queue. */
static shmq_t *lose_and_rebuild(const char *name, shmq_t *q, shmq_recovery_report_t *rep)
{
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink_segment(name), 0);
    h_assert_rc(shmq_recover(name, NULL, rep), 0);
    shmq_t *nq;
    h_assert_rc(shmq_open(name, &nq), 0);
    return nq;
}

/* Every message group `group` can receive now (maintaining a little first), acked, as a bitmask
 * of the payloads' first byte - '0' (ids are not kept across tests' expectations). */
static unsigned drain_group(shmq_t *q, const char *group)
{
    shmq_consumer_t *c;
    if (group)
        h_assert_rc(shmq_consumer_open_group(q, group, "drain", &c), 0);
    else
        h_assert_rc(shmq_consumer_open(q, "drain", &c), 0);
    unsigned got = 0;
    shmq_msg_t m;
    int rc;
    while ((rc = shmq_receive(c, &m, 50)) == 0) {
        cr_assert(m.len == 2 && ((const char *)m.data)[0] >= '0');
        unsigned bit = 1u << (((const char *)m.data)[0] - '0');
        cr_assert(!(got & bit), "group %s received message %c twice", group ? group : "default",
                  ((const char *)m.data)[0]);
        got |= bit;
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    cr_assert(rc == -ETIMEDOUT || rc == -EAGAIN, "receive: %d", rc);
    h_assert_rc(shmq_consumer_close(c), 0);
    return got;
}

static void publish(shmq_t *q, char n)
{
    char msg[2] = {n, 0};
    h_assert_rc(shmq_publish(q, msg, 2, NULL), 0);
}

static bool has_group(shmq_t *q, const char *name)
{
    shmq_group_info_t gi[SHMQ_GROUPS_MAX];
    size_t n = 0;
    h_assert_rc(shmq_group_list(q, gi, SHMQ_GROUPS_MAX, &n), 0);
    for (size_t i = 0; i < n; i++)
        if (strcmp(gi[i].name, name) == 0 && !gi[i].deleting)
            return true;
    return false;
}

/* Receive the message with payload byte n in consumer c (skipping none: it must come first). */
static shmq_msg_t receive_one(shmq_consumer_t *c, char n)
{
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 1000), 0);
    cr_assert(m.len == 2 && ((const char *)m.data)[0] == n, "got '%c', wanted '%c'",
              ((const char *)m.data)[0], n);
    return m;
}

Test(grouplog, segment_loss_restores_each_group_in_its_state)
{
    const char *name = h_qname("gstates");
    shmq_config_t cfg = glog_config(32, 8);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    const char *groups[] = {"acked", "inflight", "dead", "delayed", "gone"};
    for (int i = 0; i < 5; i++)
        h_assert_rc(shmq_group_create(q, groups[i], SHMQ_GROUP_BLOCK, 0), 0);
    publish(q, '0');
    publish(q, '1');
    publish(q, '2');
    h_assert_rc(shmq_group_create(q, "late", SHMQ_GROUP_BLOCK, 0), 0);
    publish(q, '3');
    h_assert_rc(shmq_group_delete(q, "gone"), 0);

    shmq_consumer_t *c0, *ci, *cd, *cl;
    /* default: acks message 0 */
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    shmq_msg_t m = receive_one(c0, '0');
    h_assert_rc(shmq_ack(c0, &m), 0);
    /* acked: acks everything */
    cr_assert_eq(drain_group(q, "acked"), 0xfu);
    /* inflight: holds message 0 in flight, unacked */
    h_assert_rc(shmq_consumer_open_group(q, "inflight", "ci", &ci), 0);
    receive_one(ci, '0');
    /* dead: message 0 nacked to its dead letters (max_attempts 2), message 1 acked, 2 and 3
     * nacked once (READY again). 2 and 3 are held until both came, so neither comes back
     * before the other's first delivery, whichever order redeliveries and new messages take */
    h_assert_rc(shmq_consumer_open_group(q, "dead", "cd", &cd), 0);
    shmq_msg_t held[2];
    int nacks0 = 0, acked1 = 0, nheld = 0;
    while (nacks0 < 2 || !acked1 || nheld < 2) {
        h_assert_rc(shmq_receive(cd, &m, 1000), 0);
        char n = ((const char *)m.data)[0];
        cr_assert(n == '0' || m.attempt == 1, "'%c' came back", n);
        if (n == '1') {
            h_assert_rc(shmq_ack(cd, &m), 0);
            acked1 = 1;
        } else if (n == '0') {
            nacks0++;
            h_assert_rc(shmq_nack(cd, &m, 0), 0); /* 0's second: a dead letter of group dead */
        } else {
            cr_assert(nheld < 2, "'%c' twice", n);
            held[nheld++] = m;
        }
    }
    for (int i = 0; i < 2; i++)
        h_assert_rc(shmq_nack(cd, &held[i], 0), 0);
    /* delayed: message 0 nacked with a delay of 10 min */
    h_assert_rc(shmq_consumer_open_group(q, "delayed", "cl", &cl), 0);
    m = receive_one(cl, '0');
    h_assert_rc(shmq_nack(cl, &m, 600000), 0);
    h_assert_rc(shmq_consumer_close(c0), 0);
    h_assert_rc(shmq_consumer_close(ci), 0);
    h_assert_rc(shmq_consumer_close(cd), 0);
    h_assert_rc(shmq_consumer_close(cl), 0);

    shmq_recovery_report_t rep;
    q = lose_and_rebuild(name, q, &rep);
    cr_assert_eq(rep.restored, 4, "every message is still held by some group (%llu)",
                 (unsigned long long)rep.restored);
    cr_assert(has_group(q, "acked") && has_group(q, "inflight") && has_group(q, "dead") &&
              has_group(q, "delayed") && has_group(q, "late"));
    cr_assert(!has_group(q, "gone"), "a deleted group came back");
    cr_assert_eq(drain_group(q, NULL), 0xeu, "default: 1, 2, 3");
    cr_assert_eq(drain_group(q, "acked"), 0u, "acked: nothing");
    cr_assert_eq(drain_group(q, "inflight"), 0xfu, "inflight: 0 (back from flight) to 3");
    cr_assert_eq(drain_group(q, "dead"), 0xcu, "dead: 2, 3 (0 is a dead letter, 1 acked)");
    cr_assert_eq(drain_group(q, "delayed"), 0xeu, "delayed: 1, 2, 3 (0 not before its time)");
    cr_assert_eq(drain_group(q, "late"), 0x8u, "late: only what was published after it");
    /* message 0 is still held (a dead letter of "dead", delayed in "delayed"): one slot */
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(cfg.capacity - st.free, 1, "held slots: %u", cfg.capacity - st.free);

    /* and the rebuilt queue's own log carries it all: a second loss gives the same */
    shmq_recovery_report_t rep2;
    q = lose_and_rebuild(name, q, &rep2);
    cr_assert_eq(rep2.restored + rep2.dead_letters, 1, "restored %llu dead %llu",
                 (unsigned long long)rep2.restored, (unsigned long long)rep2.dead_letters);
    cr_assert_eq(drain_group(q, "delayed"), 0u);
    cr_assert_eq(drain_group(q, "dead"), 0u);
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(cfg.capacity - st.free, 1);
    h_assert_rc(shmq_close(q), 0);
}

/* A rebuilt slot's release count names the groups that hold it: "default" acking everything
 * after the rebuild leaves the slots held for group a (fails with the count left 0: the slots
 * were freed under group a and a publish into the full queue succeeded). */
Test(grouplog, a_rebuilt_message_stays_held_for_the_groups_that_hold_it)
{
    const char *name = h_qname("rbheld");
    shmq_config_t cfg = glog_config(2, 4);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    publish(q, '0');
    publish(q, '1');
    q = lose_and_rebuild(name, q, NULL);
    cr_assert_eq(drain_group(q, NULL), 3u);
    h_assert_rc(shmq_maintain(q, NULL), 0);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), -EAGAIN); /* both slots held for group a */
    cr_assert_eq(drain_group(q, "a"), 3u);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    h_assert_rc(shmq_close(q), 0);
}

Test(grouplog, an_index_reused_after_a_delete_gets_only_its_own_messages)
{
    const char *name = h_qname("greuse");
    shmq_config_t cfg = glog_config(16, 2); /* one index besides default: reused */
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "x", SHMQ_GROUP_BLOCK, 0), 0);
    publish(q, '0');
    shmq_consumer_t *cx;
    h_assert_rc(shmq_consumer_open_group(q, "x", "cx", &cx), 0);
    receive_one(cx, '0'); /* in flight in x when x is deleted */
    h_assert_rc(shmq_group_delete(q, "x"), 0);
    h_assert_rc(shmq_consumer_close(cx), 0);
    shmq_maintain(q, NULL); /* the entry goes FREE once nothing of x is held */
    h_assert_rc(shmq_group_create(q, "y", SHMQ_GROUP_BLOCK, 0), 0);
    shmq_group_info_t gi[2];
    size_t n = 0;
    h_assert_rc(shmq_group_list(q, gi, 2, &n), 0);
    cr_assert(n == 2 && gi[1].index == 1 && strcmp(gi[1].name, "y") == 0, "y took index 1");
    publish(q, '1');
    shmq_recovery_report_t rep;
    q = lose_and_rebuild(name, q, &rep);
    cr_assert(!has_group(q, "x"));
    cr_assert_eq(drain_group(q, "y"), 0x2u, "y: only message 1, not x's message 0");
    cr_assert_eq(drain_group(q, NULL), 0x3u);
    h_assert_rc(shmq_close(q), 0);
}

static unsigned count_files(const char *dir, unsigned long long *lowest)
{
    unsigned n = 0;
    *lowest = ~0ull;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (strncmp(e->d_name, "wal.", 4) == 0 && strlen(e->d_name) == 14) {
            unsigned long long seq = strtoull(e->d_name + 4, NULL, 10);
            *lowest = seq < *lowest ? seq : *lowest;
            n++;
        }
    }
    if (d)
        closedir(d);
    return n;
}

Test(grouplog, retention_keeps_groups_and_held_messages)
{
    const char *name = h_qname("gretain");
    shmq_config_t cfg = glog_config(16, 4);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    h_assert_rc(shmq_group_create(q, "b", SHMQ_GROUP_BLOCK, 0), 0);
    publish(q, '0'); /* default acks it (a HELD slot), a holds it delayed, b as a dead letter */
    shmq_consumer_t *c0, *ca, *cb;
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    h_assert_rc(shmq_consumer_open_group(q, "b", "cb", &cb), 0);
    shmq_msg_t m = receive_one(c0, '0');
    h_assert_rc(shmq_ack(c0, &m), 0);
    m = receive_one(ca, '0');
    h_assert_rc(shmq_nack(ca, &m, 600000), 0);
    m = receive_one(cb, '0');
    h_assert_rc(shmq_nack(cb, &m, 0), 0);
    m = receive_one(cb, '0');
    h_assert_rc(shmq_nack(cb, &m, 0), 0); /* its last attempt: b's dead letter */
    /* traffic through every group moves the log on by many files */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", h_state_dir_path(), name);
    shmq_stats_t st;
    unsigned long long first_low;
    count_files(dir, &first_low);
    char big[64];
    memset(big, '9', sizeof big);
    shmq_consumer_t *cs[3] = {c0, ca, cb};
    for (int i = 0; i < 3000; i++) {
        h_assert_rc(shmq_publish(q, big, sizeof big, NULL), 0);
        for (int k = 0; k < 3; k++) {
            shmq_msg_t x;
            h_assert_rc(shmq_receive(cs[k], &x, 1000), 0);
            cr_assert_eq(x.len, sizeof big);
            h_assert_rc(shmq_ack(cs[k], &x), 0);
        }
        if (i % 100 == 0)
            shmq_maintain(q, NULL);
    }
    for (int i = 0; i < 4; i++)
        shmq_maintain(q, NULL);
    unsigned long long low;
    unsigned nfiles = count_files(dir, &low);
    cr_assert(low > first_low + 2, "old files were deleted: lowest %llu (was %llu), %u files",
              low, first_low, nfiles);
    h_assert_rc(shmq_consumer_close(c0), 0);
    h_assert_rc(shmq_consumer_close(ca), 0);
    h_assert_rc(shmq_consumer_close(cb), 0);
    shmq_recovery_report_t rep;
    q = lose_and_rebuild(name, q, &rep);
    cr_assert(has_group(q, "a") && has_group(q, "b"), "the groups outlived their records' files");
    cr_assert(rep.restored == 1 && rep.delayed == 1,
              "message 0, held by a (delayed) and b (dead): %llu, %llu delayed",
              (unsigned long long)rep.restored, (unsigned long long)rep.delayed);
    cr_assert_eq(drain_group(q, NULL), 0u);
    cr_assert_eq(drain_group(q, "a"), 0u);
    cr_assert_eq(drain_group(q, "b"), 0u);
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(cfg.capacity - st.free, 1);
    h_assert_rc(shmq_close(q), 0);
}

/* A group's dead letters redriven or purged (shmq_dlq_*_group) are logged as that group's: a
 * rebuild brings the redriven one back ready in that group only, and not the purged one. */
Test(grouplog, a_groups_redrive_and_purge_survive_a_segment_loss)
{
    const char *name = h_qname("gdlq");
    shmq_config_t cfg = glog_config(16, 4);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    publish(q, '0');
    publish(q, '1');
    cr_assert_eq(drain_group(q, NULL), 0x3u); /* default is done with both */
    shmq_consumer_t *ca;
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    for (int dead = 0; dead < 2;) { /* both to a's dead letters (max_attempts 2) */
        shmq_msg_t m;
        h_assert_rc(shmq_receive(ca, &m, 1000), 0);
        dead += m.attempt == 2;
        h_assert_rc(shmq_nack(ca, &m, 0), 0);
    }
    h_assert_rc(shmq_consumer_close(ca), 0);
    shmq_dead_letter_t dl[4];
    size_t n = 0;
    h_assert_rc(shmq_dlq_list_group(q, "a", dl, 4, &n), 0);
    cr_assert_eq(n, 2);
    uint32_t moved = 0;
    h_assert_rc(shmq_dlq_redrive_group(q, "a", dl[0].id, &moved), 0);
    cr_assert_eq(moved, 1);
    h_assert_rc(shmq_dlq_purge_group(q, "a", dl[1].id, &moved), 0);
    cr_assert_eq(moved, 1);
    shmq_recovery_report_t rep;
    q = lose_and_rebuild(name, q, &rep);
    cr_assert_eq(rep.restored, 1, "the redriven one only: %llu", (unsigned long long)rep.restored);
    h_assert_rc(shmq_dlq_list_group(q, "a", dl, 4, &n), 0);
    cr_assert_eq(n, 0, "no dead letter of a came back");
    cr_assert_eq(drain_group(q, NULL), 0u, "default had acked both");
    unsigned got = drain_group(q, "a");
    cr_assert(got == 0x1u || got == 0x2u, "a: the redriven message alone (%x)", got);
    h_assert_rc(shmq_close(q), 0);
}

/* Crash points of create and delete (docs/DESIGN.md, "Crash windows of groups"): a child forked
 * before the test's first library call (helpers.h) creates or deletes group "x" and is killed at
 * the point; the segment is repaired (the next lock taker, or maintenance) and agrees with the
 * log: a rebuild gives the same groups and each of them its messages. */
static const char *crash_name;

struct crash_child {
    const char *point;
    bool delete;  /* delete "x" (made by the parent), else create it */
    bool publish; /* instead: publish "k" */
    bool maintain; /* instead: one maintenance pass */
};

static int crash_child_main(void *arg)
{
    const struct crash_child *cc = arg;
    setenv("SHMQ_CRASH_AT", cc->point, 1);
    shmq_t *q;
    if (shmq_open(crash_name, &q))
        return 10;
    if (cc->maintain)
        shmq_maintain(q, NULL);
    else if (cc->publish)
        shmq_publish(q, "k", 2, NULL);
    else if (cc->delete)
        shmq_group_delete(q, "x");
    else
        shmq_group_create(q, "x", SHMQ_GROUP_BLOCK, 0);
    return 12; /* not killed at its crash point */
}

static void crash_group_op(const char *point, bool delete, bool repair_by_create)
{
    crash_name = h_qname(delete ? "gdelk" : "gcrek");
    struct crash_child cc = {point, delete, false, false};
    pid_t k = h_fork_gated(crash_child_main, &cc);
    shmq_config_t cfg = glog_config(16, 4);
    shmq_t *q;
    h_assert_rc(shmq_create(crash_name, &cfg, &q), 0);
    if (delete)
        h_assert_rc(shmq_group_create(q, "x", SHMQ_GROUP_BLOCK, 0), 0);
    publish(q, '0');
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFSIGNALED(st), "the child was not killed at %s (status %d)", point, st);
    /* the repair: a create of another group takes the lock from the dead holder, or a
     * maintenance pass (a dead creator's entry, a dead deleter's sweep and record) */
    if (repair_by_create)
        h_assert_rc(shmq_group_create(q, "y", SHMQ_GROUP_BLOCK, 0), 0);
    else
        for (int i = 0; i < 3; i++)
            h_assert_rc(shmq_maintain(q, NULL), 0);
    cr_assert(has_group(q, "x") == !delete, "x %s after the repair", delete ? "kept" : "lost");
    publish(q, '1');
    unsigned want_x = delete ? 0 : 0x2u; /* a created x gets message 1 (not 0, made before) */
    shmq_recovery_report_t rep;
    q = lose_and_rebuild(crash_name, q, &rep);
    cr_assert(has_group(q, "x") == !delete, "x %s after a rebuild", delete ? "came back" : "lost");
    cr_assert(has_group(q, "y") == repair_by_create);
    cr_assert_eq(drain_group(q, NULL), 0x3u);
    if (!delete)
        cr_assert_eq(drain_group(q, "x"), want_x);
    if (repair_by_create)
        cr_assert_eq(drain_group(q, "y"), 0x2u);
    h_assert_rc(shmq_close(q), 0);
}

Test(grouplog, create_killed_before_its_record_is_rolled_forward)
{
    crash_group_op("group_create_before_record", false, true);
}

Test(grouplog, create_killed_after_its_record_is_rolled_forward_by_maintenance)
{
    crash_group_op("group_create_after_record", false, false);
}

Test(grouplog, create_killed_before_the_mask_is_repaired_by_the_next_create)
{
    crash_group_op("group_create_before_mask", false, true);
}

Test(grouplog, create_killed_before_the_mask_is_repaired_by_maintenance)
{
    crash_group_op("group_create_before_mask", false, false);
}

Test(grouplog, delete_killed_before_its_record_is_logged_by_maintenance)
{
    crash_group_op("group_delete_after_mask", true, false);
}

/* A publish killed after its fan-out (cells RESERVED), before its PUBLISH record (which now
 * follows F3b, to carry the mask): maintenance frees the reservation and its cells (M0), nothing
 * of it is in the log, and every group gets the next message, before and after a rebuild. */
Test(grouplog, publish_killed_between_fanout_and_record_leaves_nothing)
{
    crash_name = h_qname("gpubk");
    struct crash_child cc = {"fanout_after_prepare", false, true, false};
    pid_t k = h_fork_gated(crash_child_main, &cc);
    shmq_config_t cfg = glog_config(2, 4); /* two slots: the dead reservation must come back */
    cfg.heartbeat_timeout_ms = 200;        /* the dead producer is judged soon */
    shmq_t *q;
    h_assert_rc(shmq_create(crash_name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFSIGNALED(st), "the child was not killed at fanout_after_prepare (%d)", st);
    shmq_stats_t s;
    int64_t until = h_now_ms() + 20000;
    do { /* maintenance frees the dead producer's reservation and its prepared cells */
        h_assert_rc(shmq_maintain(q, NULL), 0);
        h_assert_rc(shmq_stats(q, &s), 0);
        if (s.free < 2)
            h_sleep_ms(20);
    } while (s.free < 2 && h_now_ms() < until);
    cr_assert_eq(s.free, 2, "the reservation came back");
    publish(q, '1');
    publish(q, '2'); /* both slots: the one the child held too */
    shmq_recovery_report_t rep;
    q = lose_and_rebuild(crash_name, q, &rep);
    cr_assert_eq(rep.restored, 2, "1 and 2, not the killed publish (%llu)",
                 (unsigned long long)rep.restored);
    cr_assert_eq(drain_group(q, NULL), 0x6u);
    cr_assert_eq(drain_group(q, "a"), 0x6u);
    h_assert_rc(shmq_close(q), 0);
}

/* A maintainer killed inside its copy of a group's record (group_copy_before_append: the entry's
 * pin already moved to the file being written, the copy not appended): the next pass must not
 * delete the file of the group's latest record, which is then still its only one. Before the fix
 * the copy raised the pin before its append, the next pass deleted the create record's file and
 * a rebuild lost group a (test_segloss's groups variant saw it once under load: a gone after a
 * rebuild, every later message lost for it). */
Test(grouplog, a_maintainer_killed_inside_a_group_copy_keeps_the_record_file)
{
    crash_name = h_qname("gcopyk");
    struct crash_child cc = {"group_copy_before_append", false, false, true};
    pid_t k = h_fork_gated(crash_child_main, &cc);
    shmq_config_t cfg = glog_config(16, 4);
    shmq_t *q;
    h_assert_rc(shmq_create(crash_name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", h_state_dir_path(), crash_name);
    unsigned long long first_low, low;
    count_files(dir, &first_low);
    /* traffic through both groups moves the log on by several files, no maintenance meanwhile:
     * a's create record lies 2 or more files behind, so the child's pass copies it */
    shmq_consumer_t *c0, *ca;
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    shmq_consumer_t *cs[2] = {c0, ca};
    char big[64];
    memset(big, '9', sizeof big);
    for (int i = 0; i < 3000; i++) {
        h_assert_rc(shmq_publish(q, big, sizeof big, NULL), 0);
        for (int j = 0; j < 2; j++) {
            shmq_msg_t x;
            h_assert_rc(shmq_receive(cs[j], &x, 1000), 0);
            h_assert_rc(shmq_ack(cs[j], &x), 0);
        }
    }
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFSIGNALED(st), "the child was not killed at group_copy_before_append (%d)", st);
    for (int i = 0; i < 4; i++)
        h_assert_rc(shmq_maintain(q, NULL), 0);
    count_files(dir, &low);
    cr_assert(low > first_low, "retention deleted no file (lowest %llu): the test shows nothing",
              low);
    publish(q, '1');
    h_assert_rc(shmq_consumer_close(c0), 0);
    h_assert_rc(shmq_consumer_close(ca), 0);
    shmq_recovery_report_t rep;
    q = lose_and_rebuild(crash_name, q, &rep);
    cr_assert(has_group(q, "a"), "group a lost: the file of its record was deleted");
    cr_assert_eq(drain_group(q, NULL), 0x2u);
    cr_assert_eq(drain_group(q, "a"), 0x2u);
    h_assert_rc(shmq_close(q), 0);
}

/* Round after round, each group acks, nacks or holds in flight a random part of what it gets,
 * groups are deleted and made (an index reused), and the segment is lost and rebuilt from the
 * log every round (a groups variant of test_segloss's losses, in one process so the expected
 * state is exact): at the end every group gets exactly what was published while it existed and
 * it did not ack, once. */
#define R_ROUNDS 6
#define R_PER 24
#define R_MSGS (R_ROUNDS * R_PER)

Test(grouplog, random_rounds_of_segment_losses_keep_every_group)
{
    const char *name = h_qname("grounds");
    shmq_config_t cfg = glog_config(R_MSGS + 8, 4);
    cfg.max_attempts = 100;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    const char *gname[] = {NULL, "g1", "g2", "g3", "g4"};
    bool exists[5] = {true, true, true, true, false};
    for (int g = 1; g <= 3; g++)
        h_assert_rc(shmq_group_create(q, gname[g], SHMQ_GROUP_BLOCK, 0), 0);
    static bool want[5][R_MSGS]; /* published while g existed, not acked in g */
    memset(want, 0, sizeof want);
    uint64_t rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    uint32_t next = 0;
    unsigned losses = 0;
    for (int round = 0; round < R_ROUNDS; round++) {
        if (round == 2) { /* g2 goes; round 3: g4 takes its index */
            h_assert_rc(shmq_group_delete(q, "g2"), 0);
            exists[2] = false;
            for (uint32_t i = 0; i < R_MSGS; i++)
                want[2][i] = false;
        }
        if (round == 3) {
            shmq_maintain(q, NULL);
            h_assert_rc(shmq_group_create(q, "g4", SHMQ_GROUP_BLOCK, 0), 0);
            exists[4] = true;
        }
        for (int k = 0; k < R_PER; k++, next++) {
            uint32_t seq = next;
            h_assert_rc(shmq_publish(q, &seq, sizeof seq, NULL), 0);
            for (int g = 0; g < 5; g++)
                want[g][seq] = exists[g];
        }
        for (int g = 0; g < 5; g++) {
            if (!exists[g])
                continue;
            shmq_consumer_t *c;
            if (g)
                h_assert_rc(shmq_consumer_open_group(q, gname[g], "r", &c), 0);
            else
                h_assert_rc(shmq_consumer_open(q, "r", &c), 0);
            int take = (int)(h_rand(&rng) % R_PER);
            for (int k = 0; k < take; k++) {
                shmq_msg_t m;
                if (shmq_receive(c, &m, 0) != 0)
                    break;
                uint32_t seq;
                memcpy(&seq, m.data, sizeof seq);
                cr_assert(seq < next && want[g][seq], "group %d got %u, not its own", g, seq);
                uint64_t r = h_rand(&rng) % 3;
                if (r == 0) {
                    h_assert_rc(shmq_ack(c, &m), 0);
                    want[g][seq] = false;
                } else if (r == 1) {
                    h_assert_rc(shmq_nack(c, &m, 0), 0);
                } /* else: left in flight, lost with the segment, back ready after it */
            }
            h_assert_rc(shmq_consumer_close(c), 0);
        }
        shmq_recovery_report_t rep;
        q = lose_and_rebuild(name, q, &rep);
        losses++;
    }
    for (int g = 0; g < 5; g++) {
        cr_assert(has_group(q, g ? gname[g] : "default") == exists[g], "group %d", g);
        if (!exists[g])
            continue;
        shmq_consumer_t *c;
        if (g)
            h_assert_rc(shmq_consumer_open_group(q, gname[g], "drain", &c), 0);
        else
            h_assert_rc(shmq_consumer_open(q, "drain", &c), 0);
        static bool got[R_MSGS];
        memset(got, 0, sizeof got);
        shmq_msg_t m;
        while (shmq_receive(c, &m, 50) == 0) {
            uint32_t seq;
            memcpy(&seq, m.data, sizeof seq);
            cr_assert(seq < next && want[g][seq] && !got[seq], "group %d: %u", g, seq);
            got[seq] = true;
            h_assert_rc(shmq_ack(c, &m), 0);
        }
        for (uint32_t i = 0; i < next; i++)
            cr_assert(got[i] == want[g][i], "group %d lost %u after %u losses", g, i, losses);
        h_assert_rc(shmq_consumer_close(c), 0);
    }
    h_assert_rc(shmq_close(q), 0);
}

/* Groups named `name` and not deleting in the list. */
static int count_groups(shmq_t *q, const char *name)
{
    shmq_group_info_t gi[SHMQ_GROUPS_MAX];
    size_t n = 0;
    int count = 0;
    h_assert_rc(shmq_group_list(q, gi, SHMQ_GROUPS_MAX, &n), 0);
    for (size_t i = 0; i < n; i++)
        count += strcmp(gi[i].name, name) == 0 && !gi[i].deleting;
    return count;
}

/* review9: a deleter of x killed before its delete record (group_delete_after_mask), then x made
 * again (at another index: the old entry is still DELETING) and a message published to the new
 * x; the segment is lost before a maintenance pass logged the delete. The log then has two
 * creates of x and no delete: a rebuild must keep the later one only (the earlier was deleted
 * when the later was made: create refuses a name an ACTIVE group has), else the rebuilt queue has
 * two groups named x and a consumer of x opens the old one, which never gets message 1. */
Test(grouplog, a_name_made_again_after_a_killed_delete_is_one_group_after_a_rebuild)
{
    crash_name = h_qname("gdelre");
    struct crash_child cc = {"group_delete_after_mask", true, false, false};
    pid_t k = h_fork_gated(crash_child_main, &cc);
    shmq_config_t cfg = glog_config(16, 4);
    shmq_t *q;
    h_assert_rc(shmq_create(crash_name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "x", SHMQ_GROUP_BLOCK, 0), 0);
    publish(q, '0');
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFSIGNALED(st), "the child was not killed at group_delete_after_mask (%d)", st);
    h_assert_rc(shmq_group_create(q, "x", SHMQ_GROUP_BLOCK, 0), 0); /* no maintenance pass */
    cr_assert_eq(count_groups(q, "x"), 1);
    publish(q, '1');
    shmq_recovery_report_t rep;
    q = lose_and_rebuild(crash_name, q, &rep);
    cr_assert_eq(count_groups(q, "x"), 1, "x is one group after the rebuild, not %d",
                 count_groups(q, "x"));
    cr_assert_eq(drain_group(q, NULL), 0x3u);
    cr_assert_eq(drain_group(q, "x"), 0x2u, "the new x gets message 1");
    /* a second rebuild (from the first's re-log) agrees */
    q = lose_and_rebuild(crash_name, q, &rep);
    cr_assert_eq(count_groups(q, "x"), 1);
    h_assert_rc(shmq_close(q), 0);
}

/* review9: group 0 done with a message while a former reader of it lingers (its delivery was
 * taken back at its ack deadline, redelivered and acked: the slot word FENCED, not HELD) and
 * group a still holding it READY. Retention must keep (or checkpoint) the message's PUBLISH
 * record for a: before the fix a FENCED slot pinned no file and was never checkpointed, so the
 * record went with the old files and a rebuild lost the message for a. */
Test(grouplog, a_fenced_slot_keeps_the_record_another_group_needs)
{
    const char *name = h_qname("gfenret");
    shmq_config_t cfg = glog_config(16, 4);
    cfg.ack_deadline_ms = 200;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    publish(q, '0');
    shmq_consumer_t *o1, *c0, *ca;
    h_assert_rc(shmq_consumer_open(q, "o1", &o1), 0);
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    shmq_msg_t m = receive_one(ca, '0');
    h_assert_rc(shmq_nack(ca, &m, 600000), 0); /* a holds it DELAYED for the whole test */
    shmq_msg_t late = receive_one(o1, '0'); /* held past its deadline, never acked */
    shmq_maint_report_t mr;
    int64_t until = h_now_ms() + 20000;
    do { /* taken back in place: the slot's linger names o1's delivery */
        memset(&mr, 0, sizeof mr);
        h_assert_rc(shmq_maintain(q, &mr), 0);
        if (!mr.deadline_expired)
            h_sleep_ms(20);
    } while (!mr.deadline_expired && h_now_ms() < until);
    cr_assert_eq(mr.deadline_expired, 1, "o1's delivery was never taken back");
    m = receive_one(c0, '0');
    h_assert_rc(shmq_ack(c0, &m), 0); /* group 0 done; o1 lingers: the slot word FENCED */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", h_state_dir_path(), name);
    unsigned long long first_low, low;
    count_files(dir, &first_low);
    char big[64];
    memset(big, '9', sizeof big);
    shmq_consumer_t *cs[2] = {c0, ca};
    for (int i = 0; i < 3000; i++) { /* message 0 stays DELAYED in a */
        h_assert_rc(shmq_publish(q, big, sizeof big, NULL), 0);
        for (int k = 0; k < 2; k++) {
            shmq_msg_t x;
            h_assert_rc(shmq_receive(cs[k], &x, 1000), 0);
            cr_assert_eq(x.len, sizeof big);
            h_assert_rc(shmq_ack(cs[k], &x), 0);
        }
        if (i % 100 == 0)
            shmq_maintain(q, NULL);
    }
    for (int i = 0; i < 4; i++)
        shmq_maintain(q, NULL);
    count_files(dir, &low);
    cr_assert(low > first_low + 2, "old files were deleted: lowest %llu (was %llu)", low,
              first_low);
    (void)late; /* o1 still holds its stale delivery: the slot stays FENCED */
    /* the segment is lost while o1 lingers */
    h_assert_rc(shmq_unlink_segment(name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, NULL, &rep), 0);
    cr_assert(rep.restored == 1 && rep.delayed == 1,
              "message 0, held by a (delayed): %llu restored, %llu delayed",
              (unsigned long long)rep.restored, (unsigned long long)rep.delayed);
    shmq_t *nq;
    h_assert_rc(shmq_open(name, &nq), 0);
    cr_assert_eq(drain_group(nq, NULL), 0u, "default had acked it");
    h_assert_rc(shmq_close(nq), 0);
    shmq_close(q);
}
