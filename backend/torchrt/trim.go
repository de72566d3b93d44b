package torchrt

/*
#include <malloc.h>
*/
import "C"

import "runtime/debug"

// TrimHeap hands freed memory back to the operating system: the Go heap's
// unused spans and glibc's free chunks (malloc_trim), which libtorch's frees
// leave in place. RSS read after it reflects live memory, not the allocators'
// caches, so memory checks compare like with like.
func TrimHeap() {
	debug.FreeOSMemory()
	C.malloc_trim(0)
}
