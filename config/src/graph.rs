//! Dependency graphs: cycle detection that names each cycle, and a start order.

use indexmap::IndexMap;

/// A directed graph of names; an edge `a -> b` means `a` depends on `b`.
#[derive(Debug, Default, Clone)]
pub struct Graph {
    edges: IndexMap<String, Vec<String>>,
}

impl Graph {
    pub fn add_node(&mut self, n: &str) {
        self.edges.entry(n.to_string()).or_default();
    }

    pub fn add_edge(&mut self, from: &str, to: &str) {
        self.edges
            .entry(from.to_string())
            .or_default()
            .push(to.to_string());
        self.add_node(to);
    }

    /// One cycle per strongly connected component that has one, as `a -> b -> a`.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let names: Vec<&String> = self.edges.keys().collect();
        let idx = |n: &str| self.edges.get_index_of(n).expect("edge targets are nodes");
        let adj: Vec<Vec<usize>> = names
            .iter()
            .map(|n| self.edges[*n].iter().map(|m| idx(m)).collect())
            .collect();
        let comp = tarjan(&adj);
        let mut out = Vec::new();
        let mut done = vec![false; names.len()];
        for start in 0..names.len() {
            let c = comp[start];
            if done[start] {
                continue;
            }
            let members: Vec<usize> = (0..names.len()).filter(|&i| comp[i] == c).collect();
            for &m in &members {
                done[m] = true;
            }
            let self_loop = adj[start].contains(&start);
            if members.len() < 2 && !self_loop {
                continue;
            }
            // Walk inside the component from its first member until a node repeats.
            let first = members[0];
            let mut path = vec![first];
            let mut cur = first;
            loop {
                let next = *adj[cur]
                    .iter()
                    .find(|&&n| comp[n] == c)
                    .expect("a node in a cyclic component has an edge inside it");
                if let Some(pos) = path.iter().position(|&p| p == next) {
                    let mut cycle: Vec<String> =
                        path[pos..].iter().map(|&i| names[i].clone()).collect();
                    cycle.push(names[next].clone());
                    out.push(cycle);
                    break;
                }
                path.push(next);
                cur = next;
            }
        }
        out
    }

    /// Nodes in an order where dependencies come first (ties keep insertion order);
    /// nodes on cycles are left out.
    pub fn topo_order(&self) -> Vec<String> {
        let mut placed: IndexMap<&str, ()> = IndexMap::new();
        loop {
            let before = placed.len();
            for (n, deps) in &self.edges {
                if !placed.contains_key(n.as_str())
                    && deps.iter().all(|d| placed.contains_key(d.as_str()))
                {
                    placed.insert(n, ());
                }
            }
            if placed.len() == before {
                break;
            }
        }
        placed.keys().map(|s| s.to_string()).collect()
    }
}

/// Tarjan's strongly connected components, iterative; returns a component id per node.
fn tarjan(adj: &[Vec<usize>]) -> Vec<usize> {
    let n = adj.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut comp = vec![usize::MAX; n];
    let mut stack = Vec::new();
    let mut next_index = 0;
    let mut next_comp = 0;
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(&mut (v, ref mut ei)) = work.last_mut() {
            if *ei == 0 && index[v] == usize::MAX {
                index[v] = next_index;
                low[v] = next_index;
                next_index += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if *ei < adj[v].len() {
                let w = adj[v][*ei];
                *ei += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp[w] = next_comp;
                    if w == v {
                        break;
                    }
                }
                next_comp += 1;
            }
        }
    }
    comp
}

/// Formats a cycle as `a -> b -> a`.
pub fn show_cycle(c: &[String]) -> String {
    c.join(" -> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_names_cycles() {
        let mut g = Graph::default();
        g.add_edge("a", "b");
        g.add_edge("b", "c");
        g.add_edge("c", "a");
        g.add_edge("d", "a");
        g.add_edge("e", "e");
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 2);
        assert_eq!(show_cycle(&cycles[0]), "a -> b -> c -> a");
        assert_eq!(show_cycle(&cycles[1]), "e -> e");
    }

    #[test]
    fn topo_order_puts_dependencies_first() {
        let mut g = Graph::default();
        g.add_edge("app", "db");
        g.add_edge("db", "disk");
        g.add_node("lone");
        let order = g.topo_order();
        let pos = |n: &str| order.iter().position(|x| x == n).unwrap();
        assert_eq!(order.len(), 4);
        assert!(pos("disk") < pos("db") && pos("db") < pos("app"));
    }
}
