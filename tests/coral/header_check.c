/* Compiled, never run: the Coral C headers must build as strict C with every warning an error.
 * Taking each function's address checks its exact Coral signature, too. */
#include <inaccel/coral.h>
#include <inaccel/rpc.h>
#include <inaccel/shm.h>

void* (*const coral_check_alloc)(size_t) = inaccel_alloc;
void* (*const coral_check_realloc)(void*, size_t) = inaccel_realloc;
void (*const coral_check_free)(void*) = inaccel_free;
int (*const coral_check_arg_array)(inaccel_request, size_t, const void*,
                                   unsigned) = inaccel_request_arg_array;
int (*const coral_check_arg_scalar)(inaccel_request, size_t, const void*,
                                    unsigned) = inaccel_request_arg_scalar;
inaccel_request (*const coral_check_request_create)(const char*) = inaccel_request_create;
int (*const coral_check_request_fprint)(FILE*, const inaccel_request) = inaccel_request_fprint;
int (*const coral_check_request_snprint)(char*, size_t,
                                         const inaccel_request) = inaccel_request_snprint;
void (*const coral_check_request_release)(inaccel_request) = inaccel_request_release;
inaccel_response (*const coral_check_response_create)(void) = inaccel_response_create;
int (*const coral_check_response_fprint)(FILE*, const inaccel_response) = inaccel_response_fprint;
int (*const coral_check_response_snprint)(char*, size_t,
                                          const inaccel_response) = inaccel_response_snprint;
void (*const coral_check_response_release)(inaccel_response) = inaccel_response_release;
int (*const coral_check_response_wait)(inaccel_response) = inaccel_response_wait;
int (*const coral_check_response_wait_for)(inaccel_response, time_t,
                                           long) = inaccel_response_wait_for;
int (*const coral_check_submit)(inaccel_request, inaccel_response) = inaccel_submit;
