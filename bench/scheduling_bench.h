// atoll_bench's scheduling scenarios (docs/scheduling.md). Each starts private atolld daemons on
// simulated cpu devices (testing.hold occupies a compute unit without using the CPU, so a 2-core
// host measures the scheduler, not its cores) and drives them from client processes:
//
//   devices    throughput over 1, 2, 4 and 8 devices of one compute unit, against N times the
//              one-device figure. Issue target: at least 0.95 N.
//   tenants    two tenants (client processes) sharing one device, against one tenant alone.
//              Issue target: the aggregate at least 0.95 of one tenant alone.
//   reprogram  two binaries on two devices that hold one each, a mixed workload, with the fair
//              policy against the old FIFO one: reprogrammings and throughput.
#pragma once

#include <string>
#include <vector>

#include "report.h"

namespace atl::bench {

struct SchedulingOptions {
  std::string build_dir;
  double duration_s = 2.0;
  int hold_us = 2000;
};

void DeviceScaling(const SchedulingOptions& o, Report* report);
void TenantsSharing(const SchedulingOptions& o, Report* report);
void Reprogramming(const SchedulingOptions& o, Report* report);

// One client process of these scenarios (atoll_bench --child-hold): keeps `window` requests in
// flight, each `accelerators[0]` with probability `first_percent`% and else `accelerators[1]`,
// with argument `hold_us`. Writes "ready" once warm, waits for a byte on stdin, runs for
// `duration_s` and writes how many requests completed.
int ChildHold(const std::vector<std::string>& accelerators, int first_percent, int hold_us,
              int window, double duration_s);

}  // namespace atl::bench
