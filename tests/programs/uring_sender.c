/*
 * Sends datagrams through io_uring (IORING_OP_SEND), one request per datagram.
 *
 *   uring_sender ADDR PORT COUNT [async]
 *
 * With "async", each request carries IOSQE_ASYNC: io_uring hands it to an io-wq
 * worker thread instead of sending inline on the submitting thread. Starts when
 * a line arrives on stdin, so a test can attach its tracer first.
 */
#include <arpa/inet.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct sockaddr_in to = {.sin_family = AF_INET};
	static char payload[48] = "uring";
	struct io_uring ring;
	char go[8];
	int fd, count, async, sent = 0;

	if (argc < 4) {
		fprintf(stderr, "usage: %s ADDR PORT COUNT [async]\n", argv[0]);
		return 2;
	}
	to.sin_port = htons(atoi(argv[2]));
	count = atoi(argv[3]);
	async = argc > 4 && !strcmp(argv[4], "async");
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || inet_pton(AF_INET, argv[1], &to.sin_addr) != 1 ||
	    connect(fd, (struct sockaddr *)&to, sizeof(to)) || io_uring_queue_init(8, &ring, 0)) {
		perror("uring_sender");
		return 1;
	}
	if (!fgets(go, sizeof(go), stdin))
		return 1;
	for (int i = 0; i < count; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
		struct io_uring_cqe *cqe;

		io_uring_prep_send(sqe, fd, payload, sizeof(payload), 0);
		if (async)
			sqe->flags |= IOSQE_ASYNC;
		io_uring_submit(&ring);
		if (io_uring_wait_cqe(&ring, &cqe) == 0) {
			sent += cqe->res == sizeof(payload);
			io_uring_cqe_seen(&ring, cqe);
		}
	}
	printf("%d\n", sent);
	io_uring_queue_exit(&ring);
	close(fd);
	return 0;
}
