/* A linewatch subscriber in C against libzmq only, sharing no code with linewatch.
 *
 *   cc -o independent_subscriber independent_subscriber.c -lzmq
 *   ./independent_subscriber tcp://127.0.0.1:5555
 *
 * Subscribes to every topic and prints one line per message:
 *   <topic> <number of frames> <payload bytes> <header JSON>
 * It checks the frame layout of docs/protocol.md (2 or 3 frames, 3 only on "overlay", the header is a
 * JSON object naming the same topic) and exits 0 after the heartbeat with status "stopping",
 * 1 after 10 s without any message, 2 on a protocol violation.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define MAX_HEADER 65536

static int fail(const char *what) {
    fprintf(stderr, "independent_subscriber: %s\n", what);
    return 2;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s ENDPOINT\n", argv[0]);
        return 2;
    }
    void *ctx = zmq_ctx_new();
    void *sub = zmq_socket(ctx, ZMQ_SUB);
    int timeout_ms = 10000, linger = 0;
    zmq_setsockopt(sub, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0);
    if (zmq_connect(sub, argv[1]) != 0) return fail("cannot connect");

    static char header[MAX_HEADER + 1];
    int rc = 1;
    for (;;) {
        char topic[32] = {0};
        int n = zmq_recv(sub, topic, sizeof topic - 1, 0);
        if (n < 0) { fprintf(stderr, "independent_subscriber: no message for 10 s\n"); rc = 1; break; }
        if (n > (int)sizeof topic - 1) { rc = fail("topic frame too long"); break; }
        int more = 0;
        size_t sz = sizeof more;
        zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &sz);
        if (!more) { rc = fail("message without header frame"); break; }
        int hn = zmq_recv(sub, header, MAX_HEADER, 0);
        if (hn < 0 || hn > MAX_HEADER) { rc = fail("header frame missing or too long"); break; }
        header[hn] = '\0';
        int frames = 2;
        long payload = 0;
        zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &sz);
        while (more) {
            zmq_msg_t part;
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, sub, 0) < 0) { zmq_msg_close(&part); return fail("payload frame lost"); }
            payload += (long)zmq_msg_size(&part);
            zmq_msg_close(&part);
            frames++;
            zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &sz);
        }
        char expect[64];
        snprintf(expect, sizeof expect, "\"topic\":\"%s\"", topic);
        if (header[0] != '{' || header[hn - 1] != '}' || !strstr(header, expect)) {
            rc = fail("header is not a JSON object naming its topic");
            break;
        }
        if (frames > 3 || (frames == 3) != (strcmp(topic, "overlay") == 0)) {
            rc = fail("wrong number of frames for the topic");
            break;
        }
        printf("%s %d %ld %s\n", topic, frames, payload, header);
        fflush(stdout);
        if (strcmp(topic, "heartbeat") == 0 && strstr(header, "\"status\":\"stopping\"")) { rc = 0; break; }
    }
    zmq_close(sub);
    zmq_ctx_term(ctx);
    return rc;
}
