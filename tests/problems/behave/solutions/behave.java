// The verdict matrix's program in Java (see tests/problems/README.md).
import java.util.*;

public class Main {
    static volatile long sink;

    static void burn() {
        long n = 0;
        for (;;) { n++; sink = n; }
    }

    public static void main(String[] args) throws Exception {
        Scanner in = new Scanner(System.in);
        String mode = in.next();
        long a = in.hasNextLong() ? in.nextLong() : 0, b = in.hasNextLong() ? in.nextLong() : 0;
        switch (mode) {
            case "sum" -> System.out.println(a + b);
            case "wrong" -> System.out.println(a + b + 1);
            case "trailing" -> System.out.print((a + b) + "   \n\n\n");
            case "spin" -> burn();
            case "threads" -> {
                Thread[] threads = new Thread[4];
                for (int i = 0; i < 4; i++) { threads[i] = new Thread(Main::burn); threads[i].start(); }
                threads[0].join();
            }
            case "sleep" -> Thread.sleep(100_000);
            case "alloc" -> {
                List<long[]> keep = new ArrayList<>();
                for (;;) keep.add(new long[2 << 20]);
            }
            case "flood" -> { for (;;) System.out.println("flood flood flood flood flood flood flood flood"); }
            case "crash" -> {  // a JVM crash: SIGSEGV caught by the JVM, which aborts
                java.lang.reflect.Field f = sun.misc.Unsafe.class.getDeclaredField("theUnsafe");
                f.setAccessible(true);
                ((sun.misc.Unsafe) f.get(null)).putAddress(0, 0);
            }
            case "exit" -> System.exit(4);
            default -> {}
        }
    }
}
