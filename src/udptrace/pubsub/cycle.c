/*
 * The demo publisher's cycle, run through one native function.
 *
 * A Python publisher has no native function around its encode-and-send for a
 * uprobe to hook; `udptrace publish --native-cycle` calls its cycle through
 * this one instead, so `udptrace trace --uprobe LIB:udptrace_publish_cycle`
 * sees the cycle's entry and return like a C publisher's callback.
 */
__attribute__((noinline, visibility("default")))
int udptrace_publish_cycle(int (*publish)(void))
{
	int rc = publish();

	__asm__ volatile("" ::: "memory"); /* a real call and a real return, never a tail jump */
	return rc;
}
