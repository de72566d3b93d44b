// C declarations of kernels.cpp, for kernels.go.
#ifndef DIAD_KERNELS_H
#define DIAD_KERNELS_H
#ifdef __cplusplus
extern "C" {
#endif
int diad_mkldnn_available(void);
int diad_mkldnn_enabled(void);
void diad_mkldnn_set_enabled(int on);
char *diad_show_config(void);
char *diad_parallel_info(void);
char *diad_cpu_capability(void);
#ifdef __cplusplus
}
#endif
#endif
