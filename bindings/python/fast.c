/*
 * fast.c - the per-message calls of the Python package written against the CPython API, compiled
 * into the cffi module shmq._native (shmq_build.py appends this file to its C source; cffi's
 * generated code includes <Python.h>, without the limited API: see shmq_build.py).
 *
 * Why: one message at a time through cffi, Python's own work dominates (a Python-level method,
 * a cffi call that converts each argument and releases and retakes the GIL, a Message made in
 * Python): the package ran at 0.8x a plain ctypes loop. Here publish(bytes), receive(), the
 * Message and its ack are C: one method call each, no Python frame, no allocation but the
 * Message and its id.
 *
 * Three base types, subclassed in Python (_queue.py, _consumer.py) for everything else:
 *   QueueBase     publish(data) with no options; any other call goes to self._publish_slow.
 *   ConsumerBase  receive(timeout), receive_many(max, timeout), ack_many(msgs), _iter(ms)
 *                 (iteration, fetching what is ready in batches of up to .prefetch).
 *   MessageBase   the delivery (a copy of its shmq_msg_t), ack(), id, attempt, data, len().
 * A closed or forked handle, and every error, go back to Python (self._handle(), which
 * raises ForkedHandleError or ValueError; raise_error) so messages stay in one place.
 *
 * The GIL. cffi releases it around every call; here it is kept for calls that cannot block on
 * a queue of durability none (publish, ack, a receive that polls: lock-free, at most a futex
 * wake) and released for everything else: a receive that waits (first polled with the GIL
 * held, then waited for without it), and every call on a queue with a log (an append may
 * start a file; SYNC waits for its flush).
 *
 * Fork: pyshmq_fork_gen changes in every child (pthread_atfork); a handle keeps the
 * generation it was set in, as _fork.py does for the Python side.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <structmember.h>
#include <time.h>

static unsigned long pyshmq_fork_gen;
static PyObject *pyshmq_raise;        /* _errors.raise_error(rc, what) */
static PyTypeObject *pyshmq_msg_type; /* shmq.Message, a subclass of MessageBase */

static void pyshmq_after_fork_child(void)
{
    pyshmq_fork_gen++;
}

/* Raise the ShmqError of rc through Python's raise_error; what is consumed. NULL always. */
static PyObject *pyshmq_fail(int rc, PyObject *what)
{
    if (!what)
        return NULL;
    PyObject *r = PyObject_CallFunction(pyshmq_raise, "iO", rc, what);
    Py_DECREF(what);
    if (r) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_RuntimeError, "shmq: raise_error returned");
    }
    return NULL;
}

/* A closed or forked handle: self._handle() raises the error Python gives for it. NULL. */
static PyObject *pyshmq_bad_handle(PyObject *self)
{
    PyObject *r = PyObject_CallMethod(self, "_handle", NULL);
    if (r) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_RuntimeError, "shmq: a handle used across fork()");
    }
    return NULL;
}

/* Seconds (None: forever) as the C calls' milliseconds (-1 forever, 0 poll), rounded up, as
 * _consumer.timeout_ms(). -2 with an exception set. */
static int pyshmq_timeout_ms(PyObject *t)
{
    if (!t || t == Py_None)
        return -1;
    if (PyLong_CheckExact(t)) { /* receive(0), receive(5): no float made */
        int overflow;
        long v = PyLong_AsLongAndOverflow(t, &overflow);
        if (overflow)
            return overflow > 0 ? INT_MAX : 0;
        return v <= 0 ? 0 : v > INT_MAX / 1000 ? INT_MAX : (int)v * 1000;
    }
    double s = PyFloat_AsDouble(t);
    if (s == -1.0 && PyErr_Occurred())
        return -2;
    if (!(s > 0))
        return 0;
    double ms = s * 1000.0;
    if (ms >= (double)INT_MAX)
        return INT_MAX;
    int i = (int)ms;
    return i < ms ? i + 1 : i;
}

static int64_t pyshmq_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- QueueBase ---- */

typedef struct {
    PyObject_HEAD
    shmq_t *q;
    unsigned long gen;
    int hold_gil; /* durability none: publish cannot block */
} QueueObject;

static PyObject *queue_set_handle(QueueObject *self, PyObject *args)
{
    PyObject *addr;
    int hold;
    if (!PyArg_ParseTuple(args, "Op", &addr, &hold))
        return NULL;
    void *p = PyLong_AsVoidPtr(addr);
    if (!p && PyErr_Occurred())
        return NULL;
    self->q = p;
    self->gen = pyshmq_fork_gen;
    self->hold_gil = hold;
    Py_RETURN_NONE;
}

static PyObject *queue_publish(QueueObject *self, PyObject *const *args, Py_ssize_t nargsf,
                               PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs == 1 && !kwnames && self->q && self->gen == pyshmq_fork_gen) {
        PyObject *data = args[0];
        uint64_t id = 0;
        int rc;
        if (PyBytes_CheckExact(data)) {
            const char *p = PyBytes_AS_STRING(data);
            size_t n = (size_t)PyBytes_GET_SIZE(data);
            if (self->hold_gil) {
                rc = shmq_publish(self->q, p, n, &id);
            } else {
                Py_BEGIN_ALLOW_THREADS
                rc = shmq_publish(self->q, p, n, &id);
                Py_END_ALLOW_THREADS
            }
        } else {
            Py_buffer view;
            if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
                PyErr_Clear(); /* not a contiguous buffer: the slow path says what it is */
                goto slow;
            }
            /* the buffer stays exported (its owner cannot resize it) during the call */
            Py_BEGIN_ALLOW_THREADS
            rc = shmq_publish(self->q, view.buf, (size_t)view.len, &id);
            Py_END_ALLOW_THREADS
            PyBuffer_Release(&view);
        }
        if (rc == 0)
            return PyLong_FromUnsignedLongLong(id);
        return PyObject_CallMethod((PyObject *)self, "_publish_failed", "i", rc);
    }
slow:;
    /* Options, a closed or forked handle: the Python implementation. */
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *stack[16];
    if (nargs + nkw + 1 > 16) {
        PyErr_SetString(PyExc_TypeError, "publish: too many arguments");
        return NULL;
    }
    stack[0] = (PyObject *)self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++)
        stack[i + 1] = args[i];
    PyObject *name = PyUnicode_FromString("_publish_slow");
    if (!name)
        return NULL;
    PyObject *r = PyObject_VectorcallMethod(name, stack, (size_t)(nargs + 1), kwnames);
    Py_DECREF(name);
    return r;
}

static PyMethodDef queue_methods[] = {
    {"_set_handle", (PyCFunction)queue_set_handle, METH_VARARGS,
     "_set_handle(address, hold_gil): the shmq_t * (0: closed) publish() uses"},
    {"publish", (PyCFunction)(void (*)(void))queue_publish, METH_FASTCALL | METH_KEYWORDS,
     "publish(data, *, key=None, delay=None, timeout=0, headers=None) -> id (Queue.publish)"},
    {NULL},
};

static PyTypeObject QueueBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmq._native.QueueBase",
    .tp_basicsize = sizeof(QueueObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_methods = queue_methods,
    .tp_new = PyType_GenericNew,
};

/* ---- ConsumerBase ---- */

typedef struct {
    PyObject_HEAD
    shmq_consumer_t *c;
    unsigned long gen;
    int hold_gil;
    PyObject *open;   /* set of the Messages whose data view is out (released at close) */
    shmq_msg_t *buf;  /* deliveries received and not yet handed out: buf[head..tail) */
    size_t cap, head, tail;
    Py_ssize_t prefetch; /* how many iteration takes in one call */
    int busy;            /* a thread is in consumer_fetch() */
} ConsumerObject;

typedef struct {
    PyObject_HEAD
    shmq_msg_t msg;
    ConsumerObject *cons;
    PyObject *view; /* msg.data, once asked for */
    char settled;   /* acked or nacked */
} MessageObject;

static int consumer_traverse(ConsumerObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->open);
    return 0;
}

static int consumer_clear(ConsumerObject *self)
{
    Py_CLEAR(self->open);
    return 0;
}

static void consumer_dealloc(ConsumerObject *self)
{
    PyObject_GC_UnTrack(self);
    consumer_clear(self);
    PyMem_Free(self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *consumer_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    ConsumerObject *self = (ConsumerObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->open = PySet_New(NULL);
    self->prefetch = 16;
    if (!self->open) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* Release a message's data view and mark it settled (ack, nack, close). */
static int msg_settle(MessageObject *m)
{
    m->settled = 1;
    PyObject *v = m->view;
    if (!v)
        return 0;
    m->view = NULL;
    PyObject *r = PyObject_CallMethod(v, "release", NULL);
    Py_DECREF(v);
    if (r)
        Py_DECREF(r);
    else if (PyErr_ExceptionMatches(PyExc_BufferError))
        PyErr_Clear(); /* exported (numpy.frombuffer, ...): like views made from it, it stays */
    else
        return -1;
    if (m->cons->open && PySet_Discard(m->cons->open, (PyObject *)m) < 0)
        return -1;
    return 0;
}

static PyObject *consumer_set_handle(ConsumerObject *self, PyObject *args)
{
    PyObject *addr;
    int hold;
    if (!PyArg_ParseTuple(args, "Op", &addr, &hold))
        return NULL;
    void *p = PyLong_AsVoidPtr(addr);
    if (!p && PyErr_Occurred())
        return NULL;
    self->c = p;
    self->gen = pyshmq_fork_gen;
    self->hold_gil = hold;
    self->head = self->tail = 0; /* closed: shmq_consumer_close() gives them back */
    Py_RETURN_NONE;
}

/* Release every data view still out (close). */
static PyObject *consumer_release_views(ConsumerObject *self, PyObject *unused)
{
    PyObject *open = self->open;
    if (!open || PySet_GET_SIZE(open) == 0)
        Py_RETURN_NONE;
    PyObject *list = PySequence_List(open);
    if (!list)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++)
        if (msg_settle((MessageObject *)PyList_GET_ITEM(list, i)) < 0) {
            Py_DECREF(list);
            return NULL;
        }
    Py_DECREF(list);
    PySet_Clear(open);
    Py_RETURN_NONE;
}

static PyObject *msg_make(ConsumerObject *cons, const shmq_msg_t *m)
{
    MessageObject *o = (MessageObject *)pyshmq_msg_type->tp_alloc(pyshmq_msg_type, 0);
    if (!o)
        return NULL;
    o->msg = *m;
    Py_INCREF(cons);
    o->cons = cons;
    return (PyObject *)o;
}

static int consumer_room(ConsumerObject *self, size_t n)
{
    if (self->cap >= n)
        return 0;
    shmq_msg_t *b = PyMem_Realloc(self->buf, n * sizeof(*b));
    if (!b) {
        PyErr_NoMemory();
        return -1;
    }
    self->buf = b;
    self->cap = n;
    return 0;
}

/* Receive up to max deliveries into self->buf[0..*got), waiting up to ms for the first (the
 * rules of the GIL at the top). 0, 1 nothing came, -1 with an exception set. */
static int consumer_fetch_busy(ConsumerObject *self, size_t max, int ms, size_t *got);

/* One thread at a time receives on a consumer (as in C): a second one while the first waits
 * without the GIL would reallocate the array the first is receiving into, or close the
 * consumer under it. Refused with RuntimeError instead of memory corruption. */
static int consumer_fetch(ConsumerObject *self, size_t max, int ms, size_t *got)
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "shmq.Consumer: another thread is receiving on it (a consumer is used "
                        "by one thread at a time)");
        return -1;
    }
    self->busy = 1;
    int r = consumer_fetch_busy(self, max, ms, got);
    self->busy = 0;
    return r;
}

static int consumer_fetch_busy(ConsumerObject *self, size_t max, int ms, size_t *got)
{
    if (consumer_room(self, max) < 0)
        return -1;
    int64_t deadline = ms > 0 ? pyshmq_now_ms() + ms : 0;
    int rc;
    for (;;) {
        shmq_consumer_t *c = self->c;
        *got = 0;
        if (self->hold_gil) {
            rc = max == 1 ? shmq_receive(c, self->buf, 0) : shmq_receive_batch(c, self->buf, max, got, 0);
            if (rc == -EAGAIN && ms != 0) {
                Py_BEGIN_ALLOW_THREADS
                rc = max == 1 ? shmq_receive(c, self->buf, ms)
                              : shmq_receive_batch(c, self->buf, max, got, ms);
                Py_END_ALLOW_THREADS
            }
        } else {
            Py_BEGIN_ALLOW_THREADS
            rc = max == 1 ? shmq_receive(c, self->buf, ms) : shmq_receive_batch(c, self->buf, max, got, ms);
            Py_END_ALLOW_THREADS
        }
        if (rc == 0) {
            if (max == 1)
                *got = 1;
            return 0;
        }
        if (rc == -EAGAIN || rc == -ETIMEDOUT)
            return 1;
        if (rc != -EINTR) {
            pyshmq_fail(rc, PyUnicode_FromString(max == 1 ? "receive" : "receive_many"));
            return -1;
        }
        /* A signal: its Python handler runs now (and may raise; it may also use or close
         * this consumer: not busy meanwhile, and c and buf are read again), then wait what is
         * left. */
        self->busy = 0;
        int sig = PyErr_CheckSignals();
        self->busy = 1;
        if (sig < 0)
            return -1;
        if (!self->c || self->gen != pyshmq_fork_gen) { /* the handler closed it */
            pyshmq_bad_handle((PyObject *)self);
            return -1;
        }
        if (ms > 0) {
            int64_t left = deadline - pyshmq_now_ms();
            ms = left > 0 ? (int)left : 0;
        }
    }
}

static PyObject *consumer_receive(ConsumerObject *self, PyObject *const *args, Py_ssize_t nargsf,
                                  PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *t = nargs ? args[0] : NULL;
    if (nargs > 1 || (kwnames && (nargs || PyTuple_GET_SIZE(kwnames) != 1 ||
                                  !PyUnicode_Check(PyTuple_GET_ITEM(kwnames, 0)) ||
                                  PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0),
                                                                   "timeout")))) {
        PyErr_SetString(PyExc_TypeError, "receive(timeout=None) takes one argument, timeout");
        return NULL;
    }
    if (kwnames)
        t = args[0];
    if (!self->c || self->gen != pyshmq_fork_gen)
        return pyshmq_bad_handle((PyObject *)self);
    if (self->head < self->tail) /* fetched by iteration and not handed out yet */
        return msg_make(self, &self->buf[self->head++]);
    int ms = pyshmq_timeout_ms(t);
    if (ms == -2)
        return NULL;
    size_t got;
    int r = consumer_fetch(self, 1, ms, &got);
    if (r < 0)
        return NULL;
    if (r > 0)
        Py_RETURN_NONE;
    return msg_make(self, self->buf);
}

static PyObject *consumer_receive_many(ConsumerObject *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"max", "timeout", NULL};
    Py_ssize_t max = 64;
    PyObject *t = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|nO:receive_many", names, &max, &t))
        return NULL;
    if (!self->c || self->gen != pyshmq_fork_gen)
        return pyshmq_bad_handle((PyObject *)self);
    if (max < 1) {
        PyErr_SetString(PyExc_ValueError, "receive_many: max must be at least 1");
        return NULL;
    }
    size_t from = self->head, n = self->tail - self->head;
    int fetched = n == 0;
    if (fetched) {
        int ms = pyshmq_timeout_ms(t);
        if (ms == -2)
            return NULL;
        int r = consumer_fetch(self, (size_t)max, ms, &n);
        if (r < 0)
            return NULL;
        if (r > 0)
            return PyList_New(0);
        from = 0;
        self->head = self->tail = 0;
    } else if (n > (size_t)max) {
        n = (size_t)max;
    }
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list)
        return NULL;
    /* Every delivery becomes a Message before anything can fail (each is in flight here). */
    for (size_t i = 0; i < n; i++) {
        PyObject *m = msg_make(self, &self->buf[from + i]);
        if (!m) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, m);
    }
    if (!fetched)
        self->head += n;
    return list;
}

static PyObject *consumer_ack_many(ConsumerObject *self, PyObject *msgs)
{
    if (!self->c || self->gen != pyshmq_fork_gen)
        return pyshmq_bad_handle((PyObject *)self);
    PyObject *seq = PySequence_Fast(msgs, "ack_many: a sequence of Messages");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    shmq_msg_t local[64], *arr = local;
    if (n > 64 && !(arr = PyMem_Malloc((size_t)n * sizeof(*arr)))) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    PyObject *res = NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!PyObject_TypeCheck(items[i], pyshmq_msg_type)) {
            PyErr_Format(PyExc_TypeError, "ack_many: %R is not a shmq.Message", items[i]);
            goto out;
        }
    for (Py_ssize_t i = 0; i < n; i++) {
        MessageObject *m = (MessageObject *)items[i];
        arr[i] = m->msg;
        if (msg_settle(m) < 0)
            goto out;
    }
    if (n == 0) {
        res = Py_None;
        Py_INCREF(res);
        goto out;
    }
    size_t done = 0;
    int rc;
    shmq_consumer_t *c = self->c;
    if (self->hold_gil) {
        rc = shmq_ack_batch(c, arr, (size_t)n, &done);
    } else {
        Py_BEGIN_ALLOW_THREADS
        rc = shmq_ack_batch(c, arr, (size_t)n, &done);
        Py_END_ALLOW_THREADS
    }
    if (rc == 0) {
        res = Py_None;
        Py_INCREF(res);
    } else {
        res = PyObject_CallMethod((PyObject *)self, "_ack_many_failed", "inn", rc, (Py_ssize_t)done,
                                  n);
    }
out:
    if (arr != local)
        PyMem_Free(arr);
    Py_DECREF(seq);
    return res;
}

/* Iteration: a C iterator over the consumer, fetching in batches of up to .prefetch. */
typedef struct {
    PyObject_HEAD
    ConsumerObject *cons;
    int ms;   /* wait per fetch: -1 forever (then it never ends) */
    int done; /* a wait brought nothing: ended for good, as a generator */
} IterObject;

static void iter_dealloc(IterObject *self)
{
    Py_XDECREF(self->cons);
    PyObject_Free(self);
}

static PyObject *iter_next(IterObject *self)
{
    ConsumerObject *cons = self->cons;
    if (self->done)
        return NULL;
    if (!cons->c || cons->gen != pyshmq_fork_gen)
        return pyshmq_bad_handle((PyObject *)cons);
    if (cons->head == cons->tail) {
        size_t got;
        int r = consumer_fetch(cons, cons->prefetch > 1 ? (size_t)cons->prefetch : 1, self->ms, &got);
        if (r > 0)
            self->done = 1; /* nothing came: StopIteration */
        if (r)
            return NULL;
        cons->head = 0;
        cons->tail = got;
    }
    return msg_make(cons, &cons->buf[cons->head++]);
}

static PyTypeObject Iter_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmq._native.MessageIterator",
    .tp_basicsize = sizeof(IterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)iter_dealloc,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)iter_next,
};

static PyObject *consumer_iter_ms(ConsumerObject *self, PyObject *arg)
{
    int ms = PyLong_AsLong(arg);
    if (ms == -1 && PyErr_Occurred())
        return NULL;
    IterObject *it = PyObject_New(IterObject, &Iter_Type);
    if (!it)
        return NULL;
    Py_INCREF(self);
    it->cons = self;
    it->ms = ms;
    it->done = 0;
    return (PyObject *)it;
}

static PyObject *consumer_pending(ConsumerObject *self, void *unused)
{
    return PyLong_FromSize_t(self->tail - self->head);
}

static PyMethodDef consumer_methods[] = {
    {"_set_handle", (PyCFunction)consumer_set_handle, METH_VARARGS,
     "_set_handle(address, hold_gil): the shmq_consumer_t * (0: closed)"},
    {"_release_views", (PyCFunction)consumer_release_views, METH_NOARGS,
     "release the data of every message still out (close)"},
    {"_iter_ms", (PyCFunction)consumer_iter_ms, METH_O,
     "an iterator receiving with a wait of ms (-1: forever) per fetch"},
    {"receive", (PyCFunction)(void (*)(void))consumer_receive, METH_FASTCALL | METH_KEYWORDS,
     "receive(timeout=None) -> Message | None (Consumer.receive)"},
    {"receive_many", (PyCFunction)(void (*)(void))consumer_receive_many,
     METH_VARARGS | METH_KEYWORDS, "receive_many(max=64, timeout=None) -> list of Message"},
    {"ack_many", (PyCFunction)consumer_ack_many, METH_O, "ack_many(msgs) (Consumer.ack_many)"},
    {NULL},
};

static PyMemberDef consumer_members[] = {
    {"prefetch", T_PYSSIZET, offsetof(ConsumerObject, prefetch), 0,
     "how many ready messages iteration takes in one call (1: one at a time)"},
    {NULL},
};

static PyObject *consumer_get_busy(ConsumerObject *self, void *unused)
{
    return PyBool_FromLong(self->busy);
}

static PyGetSetDef consumer_getset[] = {
    {"_busy", (getter)consumer_get_busy, NULL, "a thread is receiving on it"},
    {"pending", (getter)consumer_pending, NULL,
     "messages received by iteration and not handed out yet (in flight for this consumer)"},
    {NULL},
};

static PyTypeObject ConsumerBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmq._native.ConsumerBase",
    .tp_basicsize = sizeof(ConsumerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)consumer_traverse,
    .tp_clear = (inquiry)consumer_clear,
    .tp_dealloc = (destructor)consumer_dealloc,
    .tp_methods = consumer_methods,
    .tp_members = consumer_members,
    .tp_getset = consumer_getset,
    .tp_new = consumer_new,
};

/* ---- MessageBase ---- */

static int msg_traverse(MessageObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->cons);
    Py_VISIT(self->view);
    return 0;
}

static int msg_clear(MessageObject *self)
{
    Py_CLEAR(self->view);
    Py_CLEAR(self->cons);
    return 0;
}

static void msg_dealloc(MessageObject *self)
{
    PyObject_GC_UnTrack(self);
    msg_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *msg_ack(MessageObject *self, PyObject *unused)
{
    ConsumerObject *cons = self->cons;
    if (!cons->c || cons->gen != pyshmq_fork_gen)
        return pyshmq_bad_handle((PyObject *)cons);
    if (msg_settle(self) < 0)
        return NULL;
    int rc;
    if (cons->hold_gil) {
        rc = shmq_ack(cons->c, &self->msg);
    } else {
        shmq_consumer_t *c = cons->c;
        Py_BEGIN_ALLOW_THREADS
        rc = shmq_ack(c, &self->msg);
        Py_END_ALLOW_THREADS
    }
    if (rc)
        return pyshmq_fail(rc, PyUnicode_FromFormat("ack of message %llu",
                                                    (unsigned long long)self->msg.id));
    Py_RETURN_NONE;
}

static PyObject *msg_settle_py(MessageObject *self, PyObject *unused)
{
    if (msg_settle(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *msg_get_data(MessageObject *self, void *unused)
{
    if (self->view) {
        Py_INCREF(self->view);
        return self->view;
    }
    if (self->settled || !self->cons->c) {
        PyErr_Format(PyExc_ValueError,
                     "message %llu was acked or nacked (or its consumer closed): its data is "
                     "released", (unsigned long long)self->msg.id);
        return NULL;
    }
    PyObject *v = PyMemoryView_FromMemory((char *)self->msg.data, (Py_ssize_t)self->msg.len,
                                          PyBUF_READ);
    if (!v)
        return NULL;
    if (PySet_Add(self->cons->open, (PyObject *)self) < 0) {
        Py_DECREF(v);
        return NULL;
    }
    self->view = v;
    Py_INCREF(v);
    return v;
}

static PyObject *msg_get_id(MessageObject *self, void *unused)
{
    return PyLong_FromUnsignedLongLong(self->msg.id);
}

static PyObject *msg_get_attempt(MessageObject *self, void *unused)
{
    return PyLong_FromUnsignedLong(self->msg.attempt);
}

static PyObject *msg_get_redelivered(MessageObject *self, void *unused)
{
    return PyBool_FromLong(self->msg.flags & SHMQ_MSG_REDELIVERED);
}

static PyObject *msg_get_settled(MessageObject *self, void *unused)
{
    return PyBool_FromLong(self->settled);
}

static PyObject *msg_get_addr(MessageObject *self, void *unused)
{
    return PyLong_FromVoidPtr(&self->msg);
}

static PyObject *msg_get_consumer(MessageObject *self, void *unused)
{
    Py_INCREF(self->cons);
    return (PyObject *)self->cons;
}

static Py_ssize_t msg_len(MessageObject *self)
{
    return (Py_ssize_t)self->msg.len;
}

static int msg_bool(MessageObject *self)
{
    return 1;
}

static PyMethodDef msg_methods[] = {
    {"ack", (PyCFunction)msg_ack, METH_NOARGS,
     "Done with it: its slot is freed. StaleError if it was already acked, or taken back (this "
     "consumer was declared dead or hung, or its ack deadline passed)."},
    {"_settle", (PyCFunction)msg_settle_py, METH_NOARGS, "release its data (before a nack)"},
    {NULL},
};

static PyGetSetDef msg_getset[] = {
    {"id", (getter)msg_get_id, NULL, "Unique per queue, increasing (in publish order for one producer)."},
    {"attempt", (getter)msg_get_attempt, NULL, "Deliveries of this message so far, this one included (1: the first)."},
    {"redelivered", (getter)msg_get_redelivered, NULL, "An earlier delivery of this message was not acked."},
    {"data", (getter)msg_get_data, NULL,
     "The payload, in shared memory (zero copy), valid until ack/nack; then released."},
    {"_settled", (getter)msg_get_settled, NULL, NULL},
    {"_addr", (getter)msg_get_addr, NULL, "the address of its shmq_msg_t"},
    {"_consumer", (getter)msg_get_consumer, NULL, NULL},
    {NULL},
};

static PySequenceMethods msg_as_sequence = {.sq_length = (lenfunc)msg_len};
static PyNumberMethods msg_as_number = {.nb_bool = (inquiry)msg_bool};

static PyTypeObject MessageBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmq._native.MessageBase",
    .tp_basicsize = sizeof(MessageObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)msg_traverse,
    .tp_clear = (inquiry)msg_clear,
    .tp_dealloc = (destructor)msg_dealloc,
    .tp_methods = msg_methods,
    .tp_getset = msg_getset,
    .tp_as_sequence = &msg_as_sequence,
    .tp_as_number = &msg_as_number,
};

/* _fast_init(message_type, raise_error): what the C calls make and raise with. */
static PyObject *pyshmq_fast_init(PyObject *mod, PyObject *args)
{
    PyObject *type, *raise;
    if (!PyArg_ParseTuple(args, "O!O", &PyType_Type, &type, &raise))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)type, &MessageBase_Type)) {
        PyErr_SetString(PyExc_TypeError, "_fast_init: not a subclass of MessageBase");
        return NULL;
    }
    Py_INCREF(type);
    Py_XSETREF(pyshmq_msg_type, (PyTypeObject *)type);
    Py_INCREF(raise);
    Py_XSETREF(pyshmq_raise, raise);
    Py_RETURN_NONE;
}

static PyMethodDef pyshmq_fast_init_def = {"_fast_init", pyshmq_fast_init, METH_VARARGS, NULL};

/* Called once through cffi (which released the GIL): add the types to shmq._native. */
static int pyshmq_install(void)
{
    static int done;
    int rc = -1;
    PyGILState_STATE g = PyGILState_Ensure();
    if (done) {
        rc = 0;
        goto out;
    }
    PyObject *m = PyImport_AddModule("shmq._native"); /* borrowed: being imported */
    if (!m || PyType_Ready(&QueueBase_Type) < 0 || PyType_Ready(&ConsumerBase_Type) < 0 ||
        PyType_Ready(&MessageBase_Type) < 0 || PyType_Ready(&Iter_Type) < 0)
        goto out;
    PyObject *f = PyCFunction_New(&pyshmq_fast_init_def, NULL);
    if (!f || PyModule_AddObject(m, "_fast_init", f) < 0)
        goto out;
    Py_INCREF(&QueueBase_Type);
    Py_INCREF(&ConsumerBase_Type);
    Py_INCREF(&MessageBase_Type);
    if (PyModule_AddObject(m, "QueueBase", (PyObject *)&QueueBase_Type) < 0 ||
        PyModule_AddObject(m, "ConsumerBase", (PyObject *)&ConsumerBase_Type) < 0 ||
        PyModule_AddObject(m, "MessageBase", (PyObject *)&MessageBase_Type) < 0)
        goto out;
    if (pthread_atfork(NULL, NULL, pyshmq_after_fork_child) != 0)
        goto out;
    done = 1;
    rc = 0;
out:
    if (rc)
        PyErr_Print();
    PyGILState_Release(g);
    return rc;
}
