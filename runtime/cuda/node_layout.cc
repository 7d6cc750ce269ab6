// NodeLayout (runtime/cuda/transport.h): where a job's processes run, from their node-local ranks. Plain C++ over
// the ProcessGroup interface, so MPI's group, the emulation's group of threads and their tests share it.
#include <algorithm>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "runtime/cuda/transport.h"

namespace cpscope::rt {

std::int32_t NodeLayout::nodes() const {
  return static_cast<std::int32_t>(std::count(local_rank.begin(), local_rank.end(), 0));
}

std::int32_t NodeLayout::ranks_per_node() const {
  return local_rank.empty() ? 1 : *std::max_element(local_rank.begin(), local_rank.end()) + 1;
}

std::string NodeLayout::irregular() const {
  const auto n = static_cast<std::int32_t>(local_rank.size());
  const std::int32_t per = ranks_per_node();
  if (static_cast<std::int64_t>(nodes()) * per != n)
    return fmt::format("the job's {} processes sit unevenly on {} nodes (up to {} on one)", n, nodes(), per);
  for (std::int32_t r = 0; r < n; ++r)
    if (local_rank[static_cast<std::size_t>(r)] != r % per)
      return fmt::format("the job's processes are not placed {} to a node in rank order (process {} has local rank {} "
                         "on its node, not {}: a cyclic placement, such as mpirun --map-by node or srun -m cyclic)",
                         per, r, local_rank[static_cast<std::size_t>(r)], r % per);
  return "";
}

NodeLayout node_layout(ProcessGroup& group) {
  std::vector<double> local(static_cast<std::size_t>(group.size()), -1.0);
  local[static_cast<std::size_t>(group.rank())] = group.local_rank();
  NodeLayout out;
  for (const double x : group.max(local)) out.local_rank.push_back(static_cast<std::int32_t>(x));
  return out;
}

}  // namespace cpscope::rt
