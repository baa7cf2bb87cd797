#include "fault_transport.h"

#include <string.h>

struct fault_transport {
    saga_transport base;
    saga_transport *inner;
    int refuse;
    uint64_t sends;
};

static int ft_send(saga_transport *self, const char *topic, const char *key,
                   const void *buf, size_t len, saga_sent_cb cb, void *arg)
{
    fault_transport *ft = (fault_transport *)self;
    ft->sends++;
    if (ft->refuse)
        return SAGA_ETRANSPORT;
    /* The callback names the inner transport; the relay ignores it. */
    return ft->inner->send(ft->inner, topic, key, buf, len, cb, arg);
}

static int ft_subscribe(saga_transport *self, const char *topic,
                        const char *group, saga_recv_cb cb, void *arg)
{
    fault_transport *ft = (fault_transport *)self;
    return ft->inner->subscribe(ft->inner, topic, group, cb, arg);
}

static int ft_ack(saga_transport *self, saga_delivery *d)
{
    fault_transport *ft = (fault_transport *)self;
    return ft->inner->ack(ft->inner, d);
}

static const char *ft_errmsg(saga_transport *self)
{
    fault_transport *ft = (fault_transport *)self;
    return ft->refuse ? "injected send failure" : ft->inner->errmsg(ft->inner);
}

static void ft_close(saga_transport *self)
{
    fault_transport *ft = (fault_transport *)self;
    saga_transport_free(ft->inner);
    saga_free(ft);
}

static const saga_transport ft_ops = {
    .version = SAGA_TRANSPORT_VERSION,
    .send = ft_send,
    .subscribe = ft_subscribe,
    .ack = ft_ack,
    .errmsg = ft_errmsg,
    .close = ft_close,
};

int fault_transport_new(saga_transport **out, saga_transport *inner,
                        fault_transport **handle)
{
    fault_transport *ft = saga_malloc(sizeof *ft);
    if (ft == NULL)
        return SAGA_ENOMEM;
    memset(ft, 0, sizeof *ft);
    ft->base = ft_ops;
    ft->inner = inner;
    *out = &ft->base;
    if (handle)
        *handle = ft;
    return SAGA_OK;
}

void fault_transport_refuse_sends(fault_transport *ft, int on)
{
    ft->refuse = on;
}
uint64_t fault_transport_sends(const fault_transport *ft) { return ft->sends; }
