/*
 * errdetail.h - the calling thread's detail of its last refused argument
 * (shmq_last_error_detail(), include/shmq/shmq.h): which config field and which limit.
 */
#ifndef SHMQ_ERRDETAIL_H
#define SHMQ_ERRDETAIL_H

/* Forget the thread's detail: a call that sets one starts with this. */
void err_detail_clear(void);

/* Store the detail (printf format) and return err, for `return err_detail(-EINVAL, ...)`. */
int err_detail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* SHMQ_ERRDETAIL_H */
