/*
 * The heap policy of Ferry's own programs (mqbroker, mqnamesrv, the tools,
 * ferry-bench). Not the client library's business: an application linking it
 * owns its malloc.
 */
#ifndef FY_COMMON_HEAP_H
#define FY_COMMON_HEAP_H

/*
 * Keeps freed heap memory for reuse instead of handing it back to the kernel
 * after every burst (glibc trims an arena once 128 KiB lie free at its top,
 * and serves blocks from 128 KiB up with mmap): a busy process then faults
 * the same memory in again and again, which costs microseconds a page on a
 * virtual machine that returns free memory to its host. Sets the trim
 * threshold to 256 MiB and the mmap threshold to 4 MiB, so memory is held up
 * to the process's peak use. Does nothing when GLIBC_TUNABLES already sets
 * any glibc.malloc tunable: the operator chose.
 */
void fy_heap_keep_freed(void);

#endif
